"""Pattern: parsing N:M text, the rule 1 <= N < M, sparsity values and text forms."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rnmtd3.errors import UsageError
from rnmtd3.patterns import Pattern


@pytest.mark.parametrize(
    "text, n, m",
    [("2:4", 2, 4), ("1:4", 1, 4), ("1:8", 1, 8), ("4:8", 4, 8), ("1:2", 1, 2), (" 2 : 4 ", 2, 4)],
)
def test_parse_nm(text, n, m):
    pattern = Pattern.parse(text)
    assert (pattern.n, pattern.m) == (n, m)
    assert not pattern.is_dense


@pytest.mark.parametrize("text", ["dense", "Dense", " DENSE "])
def test_parse_dense(text):
    pattern = Pattern.parse(text)
    assert pattern.is_dense
    assert pattern == Pattern.dense()
    assert str(pattern) == "dense"
    assert pattern.sparsity == 0.0


@pytest.mark.parametrize(
    "text", ["4:2", "0:4", "2:x", "3:3", "", "2:4:8", "x:4", "2:", ":4", "-1:4", "2.0:4", "2/4", "sparse", "0:0"]
)
def test_parse_refuses_bad_patterns(text):
    with pytest.raises(UsageError):
        Pattern.parse(text)


def test_usage_error_is_a_value_error():
    with pytest.raises(ValueError):
        Pattern.parse("4:2")


@pytest.mark.parametrize(
    "text, sparsity", [("2:4", 0.5), ("1:4", 0.75), ("1:8", 0.875), ("4:8", 0.5), ("1:2", 0.5), ("dense", 0.0)]
)
def test_sparsity_values(text, sparsity):
    assert Pattern.parse(text).sparsity == pytest.approx(sparsity)


def test_text_forms():
    assert str(Pattern.parse("2:4")) == "2:4"
    assert Pattern.parse("2:4").label() == "2:4 (50%)"
    assert Pattern.parse("1:8").label() == "1:8 (87.5%)"
    assert Pattern.dense().label() == "dense"


@given(st.integers(1, 64), st.integers(1, 64))
def test_parse_accepts_exactly_1_le_n_lt_m(n, m):
    text = f"{n}:{m}"
    if 1 <= n < m:
        pattern = Pattern.parse(text)
        assert (pattern.n, pattern.m) == (n, m)
        assert Pattern.parse(str(pattern)) == pattern
        assert pattern.sparsity == pytest.approx(1 - n / m)
    else:
        with pytest.raises(UsageError):
            Pattern.parse(text)


def test_patterns_are_hashable_values():
    assert Pattern.parse("2:4") == Pattern(2, 4)
    assert len({Pattern.parse("2:4"), Pattern(2, 4), Pattern.dense()}) == 2
