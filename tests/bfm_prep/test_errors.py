"""PrepError sentences that name parameters (bfm_prep.errors), and the commands saying them
with their options (bfm_prep.cli.options.option_words)."""

from __future__ import annotations

import pytest
from bfm_prep.cli.options import option_words
from bfm_prep.errors import PrepError


def _count_error(path="a{b}.mat"):
    return PrepError.naming(
        "{n_shape} {value} asks for more than the {available} in {path}; drop {n_exp}.",
        value=7,
        available=3,
        path=path,
    )


class TestNaming:
    def test_the_library_says_its_parameter_names(self):
        e = _count_error()
        assert str(e) == "n_shape 7 asks for more than the 3 in a{b}.mat; drop n_exp."

    def test_a_command_says_its_options(self):
        e = _count_error().in_words({"n_shape": "--n-shape"})
        assert isinstance(e, PrepError)
        # values are never read as fields (the braces of the path stay); unnamed parameters
        # keep their names
        assert str(e) == "--n-shape 7 asks for more than the 3 in a{b}.mat; drop n_exp."

    def test_conversions_and_format_specs_of_values(self):
        e = PrepError.naming("{res} {value!r} needs {need:,.1f} GiB.", value="9", need=1234.5)
        assert str(e.in_words({"res": "--res"})) == "--res '9' needs 1,234.5 GiB."

    def test_a_plain_error_is_kept(self):
        e = PrepError("x.mat: no such file.")
        assert e.in_words({"path": "--bfm"}) is e


class TestOptionWords:
    def test_the_error_leaving_the_block_names_the_option(self):
        with pytest.raises(PrepError) as info:
            with option_words(n_shape="--n-shape", n_exp="--n-exp"):
                raise _count_error("m.mat")
        assert str(info.value) == "--n-shape 7 asks for more than the 3 in m.mat; drop --n-exp."
        assert info.value.__suppress_context__

    def test_other_errors_pass_unchanged(self):
        plain = PrepError("m.mat: is truncated.")
        with pytest.raises(PrepError) as info:
            with option_words(n_shape="--n-shape"):
                raise plain
        assert info.value is plain
        with pytest.raises(KeyError):
            with option_words(n_shape="--n-shape"):
                raise KeyError("a bug")
