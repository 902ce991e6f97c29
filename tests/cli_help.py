"""Checks of a command's --help text shared by the bfm-prep and stn-train CLI tests."""

from __future__ import annotations

import re


def help_names(command) -> list[str]:
    """Every option name (``--out``, ``--no-pictures``) and argument name of a click command."""
    names = []
    for p in command.params:
        if p.param_type_name == "argument":
            names.append(p.metavar or p.name)
        else:
            names += [*p.opts, *p.secondary_opts]
    return names


def assert_whole(text: str, name: str, where: str) -> None:
    """``name`` appears in ``text`` as a whole word (not cut, not part of a longer name)."""
    assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text), (where, name, text)
