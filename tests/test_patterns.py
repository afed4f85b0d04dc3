"""Pattern: parsing N:M text, the rule 1 <= N < M, sparsity values, text forms, and the kept weights and measured
density."""

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rnmtd3.errors import UsageError
from rnmtd3.patterns import Pattern, network_density


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


# -- what a layer and a network really keep ----------------------------------------------------------
def brute_kept(n: int, m: int, out_features: int, in_features: int) -> int:
    """Each row cut into groups of m (the last may be shorter); a group of r weights keeps min(n, r)."""
    return out_features * sum(min(n, min(m, in_features - start)) for start in range(0, in_features, m))


@pytest.mark.parametrize(
    "text, out_features, in_features, kept",
    [("1:8", 256, 11, 512),  # Hopper's actor input: 1 of the first 8, 1 of the last 3: 18%, not 12.5%
     ("2:4", 256, 14, 2048), ("1:4", 1, 105, 27), ("1:8", 1, 113, 15), ("2:4", 3, 348, 522), ("4:8", 1, 13, 8),
     ("4:8", 1, 11, 7),
     ("2:4", 256, 256, 32768), ("dense", 256, 11, 2816)],
)
def test_kept_of_real_shapes(text, out_features, in_features, kept):
    assert Pattern.parse(text).kept(out_features, in_features) == kept


@given(st.integers(1, 16), st.integers(1, 16), st.integers(1, 64), st.integers(1, 400))
def test_kept_counts_min_n_r_per_group(n, extra, out_features, in_features):
    m = n + extra
    kept = Pattern(n, m).kept(out_features, in_features)
    assert kept == brute_kept(n, m, out_features, in_features)
    assert out_features * in_features * n / m <= kept <= out_features * in_features
    assert (kept == out_features * in_features * n / m) == (in_features % m == 0)


def test_network_density_of_hopper_by_hand():
    """Actor 11 -> 256 -> 256 -> 3 and critic 14 -> 256 -> 256 -> 1 at 1:8."""
    weights = 256 * 11 + 256 * 256 + 3 * 256 + 256 * 14 + 256 * 256 + 1 * 256
    sparse = 256 * 2 + 256 * 32 + 3 * 32 + 256 * 2 + 256 * 32 + 1 * 32
    io_dense = 256 * 11 + 256 * 32 + 3 * 256 + 256 * 14 + 256 * 32 + 1 * 256
    assert network_density(Pattern(1, 8), 11, 3, (256, 256), True) == sparse / weights  # 12.66%
    assert network_density(Pattern(1, 8), 11, 3, (256, 256), False) == io_dense / weights  # 17.19%
    assert network_density(Pattern.dense(), 11, 3, (256, 256), True) == 1.0


@given(st.sampled_from([(11, 3), (17, 6), (105, 8), (348, 17), (3, 1)]),
       st.sampled_from(["2:4", "1:4", "1:8", "4:8"]), st.lists(st.integers(1, 300), min_size=1, max_size=3),
       st.booleans())
def test_network_density_sums_the_kept_weights_of_actor_and_critic(dims, text, hidden, sparse_io):
    obs_dim, act_dim = dims
    pattern = Pattern.parse(text)
    kept = total = 0
    for sizes in ([obs_dim, *hidden, act_dim], [obs_dim + act_dim, *hidden, 1]):
        for i in range(len(sizes) - 1):
            out_features, in_features = sizes[i + 1], sizes[i]
            io_layer = i in (0, len(sizes) - 2)
            kept += out_features * in_features if io_layer and not sparse_io else brute_kept(
                pattern.n, pattern.m, out_features, in_features)
            total += out_features * in_features
    density = network_density(pattern, obs_dim, act_dim, tuple(hidden), sparse_io)
    assert density == pytest.approx(kept / total, rel=1e-12)
    assert 1 - pattern.sparsity <= density <= 1


def test_patterns_stay_torch_free():
    """`rnm status` shows the measured density and must start without importing torch."""
    code = ("import sys; from rnmtd3.patterns import Pattern, network_density; "
            "print(network_density(Pattern(2, 4), 11, 3, (256, 256), True)); assert 'torch' not in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) > 0.5


# -- unstructured:S -----------------------------------------------------------------------------------
@pytest.mark.parametrize("text, sparsity", [("unstructured:0.5", 0.5), (" Unstructured : .875 ", 0.875),
                                            ("unstructured:5e-1", 0.5), ("unstructured:0.75", 0.75)])
def test_parse_unstructured(text, sparsity):
    pattern = Pattern.parse(text)
    assert pattern.is_unstructured and not pattern.is_dense
    assert pattern.sparsity == sparsity
    assert Pattern.parse(str(pattern)) == pattern == Pattern.unstructured(sparsity)


@pytest.mark.parametrize("text", ["unstructured:0", "unstructured:1", "unstructured:x", "unstructured:", "unstructured",
                                  "unstructured:nan", "unstructured:inf", "unstructured:-0.5", "unstructured:1.5",
                                  "unstructured:0.5:1", "unstructured:1e-400"])
def test_parse_refuses_bad_unstructured(text):
    with pytest.raises(UsageError, match="pattern"):
        Pattern.parse(text)


def test_n_m_has_a_bounded_group_width():
    assert Pattern.parse("1:4096").m == 4096
    with pytest.raises(UsageError, match="at most 4096"):
        Pattern.parse("1:" + "9" * 70)


@pytest.mark.parametrize("out_features, in_features, sparsity", [(256, 11, 0.5), (256, 256, 0.75), (1, 256, 0.875),
                                                                 (3, 5, 0.999), (7, 13, 0.3)])
def test_unstructured_keeps_round_of_the_layer_and_at_least_one(out_features, in_features, sparsity):
    expected = max(1, round((1 - sparsity) * out_features * in_features))
    assert Pattern.unstructured(sparsity).kept(out_features, in_features) == expected


def test_unstructured_labels_tell_every_sparsity_apart_and_sort_after_n_m():
    labels = [Pattern.parse(t).label() for t in ("unstructured:0.5", "unstructured:0.5001", "unstructured:0.49999",
                                                 "unstructured:0.9999999")]
    assert labels[0] == "unstructured 50%" and len(set(labels)) == 4 and "100%" not in labels[3]
    order = sorted(["unstructured:0.75", "1:8", "dense", "unstructured:0.5", "2:4", "1:4"], key=Pattern.sort_key)
    assert order == ["dense", "2:4", "unstructured:0.5", "1:4", "unstructured:0.75", "1:8"]


def test_network_density_of_unstructured_counts_each_layer_budget():
    pattern = Pattern.unstructured(0.75)
    sizes = [(11, 64), (64, 64), (64, 3), (14, 64), (64, 64), (64, 1)]
    kept = sum(pattern.kept(o, i) for i, o in sizes)
    assert network_density(pattern, 11, 3, (64, 64), sparse_io=True) == kept / sum(i * o for i, o in sizes)
