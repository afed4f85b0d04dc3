"""A variant: a method run under one setting of the keys that vary in a set of runs. It is what the report's columns,
plot lines and TensorBoard run names are, so that runs which differ in more than the seed are told apart and never
pooled: a `--set mask_interval=1000,10000` sweep of 2:4 is two variants, `2:4 (50%), mask_interval=1000` and
`2:4 (50%), mask_interval=10000`.

A key *varies* when runs of one env and method have more than one value of it; a dense run ignores SPARSITY_KEYS,
which its config holds at their defaults anyway. Keys that differ only between envs (a longer budget for Ant) leave
each env's runs one setting, and so name no variant. Only the varying keys are spelled out, so that a report of one
setting reads as plain methods.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from .config import SPARSITY_KEYS, RunConfig, config_keys, stored_config, written
from .methods import Method, method_text

NOT_SETTINGS = frozenset({"env", "pattern", "seed", "mask_rule", "sparse_init"})
"""Keys that never name a variant: the env is a row, the seed is what a cell averages over, the rest is the method."""


@dataclass(frozen=True)
class Variant:
    method: Method
    settings: tuple[tuple[str, Any], ...] = ()
    """(key, value as stored in the config's JSON, lists as tuples), sorted by key."""

    def __str__(self) -> str:
        """Canonical text: the method's, then `key=value` per setting: `2:4+rigl mask_interval=1000`."""
        return " ".join([str(self.method), *(f"{key}={written(value)}" for key, value in self.settings)])

    def label(self) -> str:
        """For headers and legends: `2:4 (50%) rigl, mask_interval=1000`."""
        return ", ".join([self.method.label(), *(f"{key}={written(value)}" for key, value in self.settings)])

    def sort_key(self) -> tuple:
        """The method's order, then each setting by value (numbers by size, 1000 before 10000)."""
        return (self.method.sort_key(), tuple(value_order(value) for _, value in self.settings))

    def baseline_settings(self) -> tuple[tuple[str, Any], ...]:
        """The settings a dense baseline for this variant must share: all but those a dense run ignores."""
        return tuple((key, value) for key, value in self.settings if key not in SPARSITY_KEYS)


def is_number(value: Any) -> bool:
    """A stored value that orders by size (not a boolean, which JSON and Python count as a number)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def value_order(value: Any) -> tuple:
    """Sort key of a stored value: numbers by size (1000 before 10000), then anything else by its JSON text."""
    return (0, float(value), "") if is_number(value) else (1, 0.0, json.dumps(value, sort_keys=True))


KNOWN_KEYS = frozenset(config_keys())


def _applies(key: str, method: str) -> bool:
    """Whether a key can set a run of `method` apart: one this rnm knows (a key written by a newer rnm, which no
    run here can have set, names nothing), not part of the method, and not one that a dense run ignores."""
    return (key in KNOWN_KEYS and key not in NOT_SETTINGS
            and not (Method.parse(method).pattern.is_dense and key in SPARSITY_KEYS))


def _frozen(value: Any) -> Any:
    """A stored value made hashable: `hidden` is a JSON list, [256, 256] -> (256, 256), which `written` shows as
    256x256."""
    return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


def varying_keys(runs: pd.DataFrame) -> list[str]:
    """The keys with more than one value among the runs of some env and method, sorted. `runs` has env, pattern and
    config (the stored JSON text), as the registry's runs frame; a config that does not read sets nothing apart."""
    keys: set[str] = set()
    methods = [method_text(c, p) for c, p in zip(runs["config"], runs["pattern"])]
    for (_, method), group in runs.assign(method=methods).groupby(["env", "method"]):
        configs = [config for config in map(stored_config, group["config"]) if config]  # {}: unreadable
        for key in set().union(*configs):
            if _applies(key, method) and len({json.dumps(c.get(key), sort_keys=True) for c in configs}) > 1:
                keys.add(key)
    return sorted(keys)


def run_variants(runs: pd.DataFrame, keys: Sequence[str] | None = None) -> list[Variant]:
    """Each run's variant, in the order of `runs`: its method with its values of `keys` (default: varying_keys)."""
    keys = varying_keys(runs) if keys is None else sorted(keys)
    variants = []
    for text, pattern in zip(runs["config"], runs["pattern"]):
        config, method = stored_config(text), method_text(text, pattern)
        settings = tuple((key, _frozen(config.get(key))) for key in keys if _applies(key, method)) if config else ()
        variants.append(Variant(Method.parse(method), settings))
    return variants


def config_variants(configs: Sequence[RunConfig]) -> list[Variant]:
    """Each config's variant among `configs` (a sweep before it is queued), as run_variants on their runs."""
    frame = pd.DataFrame({"env": [c.env for c in configs], "pattern": [str(c.pattern) for c in configs],
                          "config": [c.to_json() for c in configs]})
    return run_variants(frame) if configs else []


def variant_order(variants: Sequence[Variant]) -> list[Variant]:
    """Distinct variants in report order: by method, then by setting values."""
    return sorted(set(variants), key=Variant.sort_key)
