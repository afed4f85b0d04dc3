"""The N:M sparsity pattern: a value type that the config, the registry and the report all share."""

from __future__ import annotations

import re
from dataclasses import dataclass

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
