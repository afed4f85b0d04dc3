"""Where a layer's zeros may be: dense, row-wise N:M, or unstructured at a sparsity S.

A value type that the config, the registry and the report all share, and that imports no torch. Each pattern is a
set of groups with a budget of nonzero weights per group: N in every M consecutive weights of a row for N:M, the
round((1 - S) * out * in) weights of the whole layer for `unstructured:S`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

from .errors import UsageError

_NM = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")
MAX_M = 4096
"""Wider than any layer of these networks; a bound keeps the padding (and the stored text) small."""
_UNSTRUCTURED = re.compile(r"^\s*unstructured\s*:\s*(\S+)\s*$")


@dataclass(frozen=True, order=True)
class Pattern:
    """`n` of every `m` consecutive weights of a row may be nonzero; `Pattern.dense()` keeps all (n = m = 0);
    `Pattern.unstructured(s)` keeps a fraction 1 - s of each layer anywhere (n = m = 0, `s` its sparsity)."""

    n: int
    m: int
    s: float = 0.0

    @staticmethod
    def unstructured(sparsity: float) -> "Pattern":
        return Pattern(0, 0, float(sparsity))

    @staticmethod
    def dense() -> "Pattern":
        return Pattern(0, 0)

    @staticmethod
    def parse(text: str) -> "Pattern":
        """Parse `2:4`, `unstructured:0.75` or `dense`; 0:4, 4:2, 3:3, unstructured:0 or :1 and non-numbers are
        refused with a message naming the rule."""
        raw = str(text).strip().lower()
        if raw == "dense":
            return Pattern.dense()
        unstructured = _UNSTRUCTURED.match(raw)
        if unstructured:
            try:
                sparsity = float(unstructured.group(1))
            except ValueError:
                sparsity = math.nan
            if not 0 < sparsity < 1:  # also refuses nan and inf
                raise UsageError(f"bad pattern {text!r}: unstructured:S needs a sparsity 0 < S < 1 "
                                 "(e.g. unstructured:0.75)")
            return Pattern.unstructured(sparsity)
        match = _NM.match(raw)
        if not match:
            raise UsageError(f"bad pattern {text!r}: write N:M with whole numbers (e.g. 2:4, 1:8), "
                             "unstructured:S with 0 < S < 1, or 'dense'")
        n, m = int(match.group(1)), int(match.group(2))
        if not 1 <= n < m:
            raise UsageError(
                f"bad pattern {text!r}: N:M needs 1 <= N < M (e.g. 2:4, 1:8); use 'dense' for no sparsity"
            )
        if m > MAX_M:
            raise UsageError(f"bad pattern {text!r}: M is at most {MAX_M} (a group wider than any layer is a row)")
        return Pattern(n, m)

    @property
    def is_dense(self) -> bool:
        return self.m == 0 and self.s == 0

    @property
    def is_unstructured(self) -> bool:
        return self.s > 0

    @property
    def sparsity(self) -> float:
        """Fraction of weights pruned: 1 - N/M, S for unstructured, and 0 for dense."""
        if self.m:
            return 1.0 - self.n / self.m
        return self.s

    def kept(self, out_features: int, in_features: int) -> int:
        """Weights a layer of this shape keeps: N per full group of M, min(N, r) in a trailing group of r < M;
        round((1 - S) * out * in) for unstructured, but at least one, so no layer is cut from the network.

        The trailing group is why a narrow layer is denser than N/M (Hopper's 11 inputs keep 2 of 11 at 1:8).
        """
        if self.is_dense:
            return out_features * in_features
        if self.is_unstructured:
            return max(1, round((1.0 - self.s) * out_features * in_features))
        full, rest = divmod(in_features, self.m)
        return out_features * (full * self.n + min(self.n, rest))

    def __str__(self) -> str:
        if self.is_unstructured:
            return f"unstructured:{self.s!r}"  # the shortest text that parses back to the same float
        return "dense" if self.is_dense else f"{self.n}:{self.m}"

    @staticmethod
    def sort_key(text: str) -> tuple[float, bool, int, int]:
        """Column order of every table: dense first, then by increasing sparsity, N:M before unstructured."""
        pattern = Pattern.parse(text)
        return (pattern.sparsity, pattern.is_unstructured, pattern.n, pattern.m)

    def label(self) -> str:
        """Header text for tables and legends, e.g. '2:4 (50%)' or 'unstructured 50%'. An unstructured label has
        every digit of S (up to 10), as it is all that tells two such patterns apart (50% and 49.999%)."""
        if self.is_unstructured:
            return f"unstructured {self.s * 100:.10g}%"
        return "dense" if self.is_dense else f"{self} ({self.sparsity:.1%})".replace(".0%", "%")


def network_density(pattern: Pattern, obs_dim: int, act_dim: int, hidden: Sequence[int], sparse_io: bool) -> float:
    """The density a TD3 agent really has, shown beside the nominal N/M: a width that is not a multiple of M
    keeps more (Hopper's 11 inputs keep 18% at 1:8), and so do the dense first and last layers of sparse_io=false.

    Kept weights / all weights over the weight matrices (not the biases) of the actor (obs -> hidden -> act) and
    one critic (obs + act -> hidden -> 1); the other critic and the targets have the same shapes and masks.
    """
    kept = total = 0
    for sizes in ([obs_dim, *hidden, act_dim], [obs_dim + act_dim, *hidden, 1]):
        last = len(sizes) - 2
        for i, (in_features, out_features) in enumerate(zip(sizes, sizes[1:])):
            layer_pattern = pattern if sparse_io or 0 < i < last else Pattern.dense()
            kept += layer_pattern.kept(out_features, in_features)
            total += out_features * in_features
    return kept / total
