"""Running ``bfm-prep`` in the test process."""

from __future__ import annotations

from bfm_prep.cli import main


def invoke(argv, capsys) -> tuple[int, str, str]:
    """Run ``bfm-prep ARGV`` in-process: (exit status, stdout, stderr) of this call only."""
    capsys.readouterr()
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err
