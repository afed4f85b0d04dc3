"""A method: a pattern (where the zeros may be) with its mask rule (how they move) and its init (how the kept
weights start). The report's columns, aggregate rows and plot lines, and `rnm status`'s rows, are methods, so that
N:M, unstructured and the dynamic sparse rules stand side by side; every other key must be one setting per report
column (`report.stats` refuses a mix).

Two spellings, both derived from the same three parts, with the defaults (magnitude, dense init) left unsaid:
- the canonical text, in the exported frames: `dense`, `2:4`, `2:4+rigl`, `1:8+scaled`,
  `unstructured:0.5+set+scaled`;
- the label, in headers and legends: the pattern's own label, then the rule, then `scaled`: `dense`, `2:4 (50%)`,
  `2:4 (50%) rigl`, `1:8 (87.5%) scaled`, `unstructured 50%`, `unstructured 50% set scaled`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import MASK_RULES, SPARSE_INITS, json_defaults, stored_config
from .errors import UsageError
from .patterns import Pattern

DEFAULTS: dict[str, Any] = json_defaults()
SEPARATOR = "+"


@dataclass(frozen=True)
class Method:
    pattern: Pattern
    rule: str = DEFAULTS["mask_rule"]
    init: str = DEFAULTS["sparse_init"]

    @staticmethod
    def of_config(config: dict[str, Any]) -> "Method":
        """The method of a stored config (summary.stored_config); a dense run has no rule or init to speak of."""
        pattern = Pattern.parse(config["pattern"])
        if pattern.is_dense:
            return Method(pattern)
        rule, init = config["mask_rule"], config["sparse_init"]
        if rule not in MASK_RULES or init not in SPARSE_INITS:
            raise UsageError(f"a run has mask_rule={rule}, sparse_init={init}, which this rnm does not know "
                             "(made by a newer rnm?): report it with that version")
        return Method(pattern, rule, init)

    @staticmethod
    def parse(text: str) -> "Method":
        """Inverse of str(): 'unstructured:0.5+rigl+scaled' -> its pattern, rule and init."""
        pattern, *modifiers = str(text).split(SEPARATOR)
        rules = [m for m in modifiers if m in MASK_RULES]
        inits = [m for m in modifiers if m in SPARSE_INITS]
        if len(rules) > 1 or len(inits) > 1 or len(rules) + len(inits) != len(modifiers):
            raise UsageError(f"bad method {text!r}: write a pattern, then +rule ({', '.join(MASK_RULES)}) and "
                             f"+init ({', '.join(SPARSE_INITS)}), e.g. 2:4+rigl+scaled")
        return Method(Pattern.parse(pattern), *rules or [DEFAULTS["mask_rule"]], *inits or [DEFAULTS["sparse_init"]])

    def _modifiers(self) -> list[str]:
        """The rule and init where they are not the defaults, in that order."""
        return [value for key, value in (("mask_rule", self.rule), ("sparse_init", self.init))
                if value != DEFAULTS[key]]

    def __str__(self) -> str:
        return SEPARATOR.join([str(self.pattern), *self._modifiers()])

    def label(self) -> str:
        return " ".join([self.pattern.label(), *self._modifiers()])

    def sort_key(self) -> tuple:
        """By sparsity (dense first), N:M before unstructured at equal sparsity (Pattern.sort_key); within one
        pattern magnitude, set, rigl, each with the dense init before the scaled one."""
        return (*Pattern.sort_key(str(self.pattern)), MASK_RULES.index(self.rule), SPARSE_INITS.index(self.init))


def method_order(text: str) -> tuple:
    """Sort key of a method's canonical text: the order of every column, aggregate row and legend."""
    return Method.parse(text).sort_key()


def method_text(config_text: str, pattern: str) -> str:
    """The canonical method of a run from its stored config; its pattern alone where the config does not read (a
    run edited by hand still has a row), and where it names a rule this version does not know."""
    config = stored_config(config_text)
    try:
        return str(Method.of_config(config)) if config else pattern
    except UsageError:
        return pattern
