"""The one exception type for errors a user can cause (bad files, bad arguments, bad data)."""

from __future__ import annotations

import os

__all__ = ["TrainError", "option_name", "refuse_folder"]


def option_name(setting: str) -> str:
    """The command-line spelling of a setting: ``"batch_size"`` -> ``"--batch-size"``."""
    return "--" + setting.replace("_", "-")


class TrainError(Exception):
    """A user-caused error, said in one sentence: what, which file or argument, what to do.

    A message that names settings (arguments such as ``batch_size``) writes them as ``{0}``,
    ``{1}``, ... (in an f-string: ``{{0}}``) and passes their names in ``settings``:
    ``str(error)`` spells them as the library's parameter names (``batch_size``),
    :meth:`for_cli` as the command line's options (``--batch-size``). So library code never
    speaks in flags, and the CLI never rewords a message.

    The CLI prints the message on one line and exits with status 2, without a traceback.
    """

    def __init__(self, message: str, settings: tuple[str | tuple[str, str], ...] = ()):
        self.template = message
        # A setting is a name (``"batch_size"``), or a pair (library, command line) where the
        # two spell it differently (``("pairs=False", "--no-pairs")``).
        self.settings = tuple(s if isinstance(s, tuple) else (s, option_name(s)) for s in settings)
        super().__init__(self._spell(tuple(lib for lib, _ in self.settings)))

    def for_cli(self) -> str:
        """The message with each setting spelled as its command-line option."""
        return self._spell(tuple(cli for _, cli in self.settings))

    def _spell(self, names: tuple[str, ...]) -> str:
        # Plain replacement, not str.format: the rest of the message (paths, file contents)
        # may hold braces of its own.
        text = self.template
        for i, name in enumerate(names):
            text = text.replace(f"{{{i}}}", name)
        return text


def refuse_folder(path, what: str, hint: str) -> None:
    """Raise ``"{what} {path} is a folder, not a file; {hint}."`` when ``path`` is a folder
    (so that a folder given where a file belongs is not reported as a missing file)."""
    if os.path.isdir(path):
        raise TrainError(f"{what} {path} is a folder, not a file; {hint}.")
