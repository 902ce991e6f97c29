"""The one exception type for errors a user can cause (bad files, bad arguments, bad data)."""


class TrainError(Exception):
    """A user-caused error, said in one sentence: what, which file or argument, what to do.

    The CLI prints the message on one line and exits with status 2, without a traceback.
    """


def check_output_folder(path, option: str = "--out") -> None:
    """Refuse an output folder that cannot be created or written, before any work is done.

    Raises:
        TrainError: ``path`` is an existing file, lies below a file, or its nearest existing
            folder is not writable.
    """
    import os
    from pathlib import Path

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise TrainError(
            f"{option} {p} is an existing file, not a folder; choose another {option}."
        )
    anc = p
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
        if str(anc) == "":
            anc = Path(".")
    if anc.exists() and not anc.is_dir():
        raise TrainError(f"{option} {p}: {anc} is a file, not a folder; choose another {option}.")
    if anc.is_dir() and not os.access(anc, os.W_OK | os.X_OK):
        raise TrainError(
            f"{option} {p}: cannot write in {anc} (permission denied); choose another {option}."
        )


def make_output_folder(path, option: str = "--out"):
    """Create the output folder ``path`` (and its parents); a :class:`TrainError` if it cannot
    be. Returns it as a Path."""
    from pathlib import Path

    p = Path(path)
    check_output_folder(p, option)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TrainError(
            f"{option} {p}: cannot create the folder ({e.strerror or e}); choose another {option}."
        ) from None
    return p
