"""The N:M sparsity pattern: a value type that the config, the registry and the report all share."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from .errors import UsageError

_NM = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


@dataclass(frozen=True, order=True)
class Pattern:
    """`n` of every `m` consecutive weights of a row may be nonzero; `Pattern.dense()` keeps all (n = m = 0)."""

    n: int
    m: int

    @staticmethod
    def dense() -> "Pattern":
        return Pattern(0, 0)

    @staticmethod
    def parse(text: str) -> "Pattern":
        """Parse `2:4` or `dense`; 0:4, 4:2, 3:3 and non-numbers are refused with a message naming the rule."""
        raw = str(text).strip().lower()
        if raw == "dense":
            return Pattern.dense()
        match = _NM.match(raw)
        if not match:
            raise UsageError(f"bad pattern {text!r}: write N:M with whole numbers (e.g. 2:4, 1:8) or 'dense'")
        n, m = int(match.group(1)), int(match.group(2))
        if not 1 <= n < m:
            raise UsageError(
                f"bad pattern {text!r}: N:M needs 1 <= N < M (e.g. 2:4, 1:8); use 'dense' for no sparsity"
            )
        return Pattern(n, m)

    @property
    def is_dense(self) -> bool:
        return self.m == 0

    @property
    def sparsity(self) -> float:
        """Fraction of weights pruned: 1 - N/M, and 0 for dense."""
        return 0.0 if self.is_dense else 1.0 - self.n / self.m

    def kept(self, out_features: int, in_features: int) -> int:
        """Weights a layer of this shape keeps: N per full group of M, min(N, r) in a trailing group of r < M.

        The trailing group is why a narrow layer is denser than N/M (Hopper's 11 inputs keep 2 of 11 at 1:8).
        """
        if self.is_dense:
            return out_features * in_features
        full, rest = divmod(in_features, self.m)
        return out_features * (full * self.n + min(self.n, rest))

    def __str__(self) -> str:
        return "dense" if self.is_dense else f"{self.n}:{self.m}"

    @staticmethod
    def sort_key(text: str) -> tuple[float, int, int]:
        """Column order of every table: dense first, then by increasing sparsity, ties by N:M."""
        pattern = Pattern.parse(text)
        return (pattern.sparsity, pattern.n, pattern.m)

    def label(self) -> str:
        """Header text for tables and legends, e.g. '2:4 (50%)'."""
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
