"""The one exception type for errors a user can cause (bad files, bad arguments)."""

from __future__ import annotations

from collections.abc import Mapping


class PrepError(Exception):
    """A user-caused error, said in one sentence: what, which file or argument, what to do.

    The CLI prints the message on one line and exits with status 2, without a traceback.

    The library names its own parameters (``n_shape``, ``expression_path``); the commands own
    their options' names (``--n-shape``, ``--expression``). A message about a parameter is
    therefore made with :meth:`naming`, from a template whose fields are either values or
    parameter names, and a command says the same sentence with its options' names through
    :meth:`in_words`.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.template: str | None = None
        self.values: dict = {}

    @classmethod
    def naming(cls, template: str, **values) -> PrepError:
        """A PrepError whose sentence names parameters.

        Args:
            template: the sentence as a ``str.format`` template. A field given in ``values``
                is a value (a path, a count; conversions and format specs as usual); any other
                field is a parameter name, said as itself, e.g.
                ``"{n_shape} {value} asks for more identity components than the file has"``.
            values: the values of the template's value fields.
        """
        error = cls(template.format_map(_Words(values, {})))
        error.template, error.values = template, dict(values)
        return error

    def in_words(self, words: Mapping[str, str]) -> PrepError:
        """The same error, each parameter said as ``words`` says (a command's options, e.g.
        ``{"n_shape": "--n-shape"}``); parameters ``words`` does not name keep their names.
        An error made without :meth:`naming` is returned as it is."""
        if self.template is None:
            return self
        return PrepError(self.template.format_map(_Words(self.values, words)))


class _Words(dict):
    """The ``format_map`` mapping of :meth:`PrepError.naming`: the values, and for any other
    field (a parameter name) its word."""

    def __init__(self, values: Mapping, words: Mapping[str, str]) -> None:
        super().__init__(values)
        self.words = words

    def __missing__(self, name: str) -> str:
        return self.words.get(name, name)
