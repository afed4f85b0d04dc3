"""From what a user types (env names, pattern texts, seed count, `--set` lists) to validated RunConfigs."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Sequence
from typing import Any, Iterable

from .config import RunConfig, canonical, parse_assignments
from .envs import resolve_env_id
from .errors import UsageError
from .patterns import Pattern

MAX_RUNS = 100_000
"""Most runs one `rnm queue` may expand to: far beyond a paper's sweep, and quick to expand (4 s and 70 MB)."""


def split_list(text: str) -> list[str]:
    """'Ant, Hopper' -> ['Ant', 'Hopper']; empty items are an error, not silently dropped."""
    items = [item.strip() for item in text.split(",")]
    if not items or any(not item for item in items):
        raise UsageError(f"bad list {text!r}: write comma-separated values such as Ant,Hopper")
    return items


def make_config(env: str, pattern: str | Pattern, seed: int, values: dict[str, Any] | None = None) -> RunConfig:
    """One validated config; the env name is resolved (Hopper -> Hopper-v5)."""
    pat = pattern if isinstance(pattern, Pattern) else Pattern.parse(pattern)
    return canonical(RunConfig(env=resolve_env_id(env), pattern=pat, seed=seed, **(values or {})))


def single_values(assignments: list[str], steps: int | None = None) -> dict[str, Any]:
    """`--set` (and `--steps`) for one run: each key takes exactly one value."""
    swept = _with_steps(parse_assignments(assignments), steps)
    for key, values in swept.items():
        if len(values) != 1:
            raise UsageError(f"--set {key} has {len(values)} values; a single run takes one (queue sweeps lists)")
    return {key: values[0] for key, values in swept.items()}


SEEDS_HELP = "give a count (5: seeds 0..4), a list (3,7) or a range (5-9)"


_COUNT = re.compile(r"[0-9]+")
_RANGE = re.compile(r"([0-9]+)-([0-9]+)")


def parse_seeds(text: str) -> Sequence[int]:
    """`--seeds` as a user writes it: a count N (seeds 0..N-1, as rl-zoo and papers number them), a comma list of
    specific seeds (`3,7`; one seed alone: `3,`), or a range A-B, inclusive (`5-9` adds five seeds to a sweep of
    5), in plain digits. Counts and ranges stay ranges, so that a typo of 10**9 is refused by the sweep's cap, not
    by memory."""
    text = text.strip()
    if "," in text:
        items = [item.strip() for item in text.split(",")]
        items = items[:-1] if len(items) == 2 and items[1] == "" else items  # `3,`: one seed
        if not items or not all(_COUNT.fullmatch(item) for item in items):
            raise UsageError(f"bad --seeds {text!r}: a list holds seeds in plain digits, such as 3,7; {SEEDS_HELP}")
        seeds: Sequence[int] = [int(item) for item in items]
        if len(set(seeds)) != len(seeds):
            raise UsageError(f"bad --seeds {text!r}: a seed is named twice")
        return seeds
    if match := _RANGE.fullmatch(text):
        seeds = range(int(match[1]), int(match[2]) + 1)
    elif _COUNT.fullmatch(text):
        seeds = range(int(text))
    else:
        raise UsageError(f"bad --seeds {text!r}: {SEEDS_HELP}")
    if not seeds:
        raise UsageError(f"bad --seeds {text!r}: it names no seed; {SEEDS_HELP}")
    return seeds


def expand(envs: Iterable[str], patterns: Iterable[str], seeds: int | Sequence[int], assignments: list[str] = (),
           steps: int | None = None, baseline: bool = True) -> list[RunConfig]:
    """envs x patterns (+ dense unless baseline is False) x seeds (a count N: 0..N-1; or the seeds themselves) x
    every `--set` list, in a stable order.

    Every input is validated before any config is returned, so a caller can write all of them or none.
    """
    if isinstance(seeds, int):
        seeds = range(seeds)
    if not seeds:
        raise UsageError(f"bad --seeds: it names no seed; {SEEDS_HELP}")
    env_ids = list(dict.fromkeys(resolve_env_id(env) for env in envs))
    pats = list(dict.fromkeys(Pattern.parse(p) for p in patterns))
    if baseline and Pattern.dense() not in pats:
        pats.insert(0, Pattern.dense())
    swept = _with_steps(parse_assignments(list(assignments)), steps)
    count = len(env_ids) * len(pats) * len(seeds) * math.prod(len(values) for values in swept.values())
    if count > MAX_RUNS:
        raise UsageError(f"this sweep expands to {count:,} runs, more than the {MAX_RUNS:,} one queue may add: "
                         "fewer seeds or shorter --set lists")
    keys = list(swept)
    configs = []
    for env, pattern, combo, seed in itertools.product(env_ids, pats, itertools.product(*swept.values()),
                                                       seeds):
        configs.append(canonical(RunConfig(env=env, pattern=pattern, seed=seed, **dict(zip(keys, combo)))))
    return list(dict.fromkeys(configs))


ACTS_ONLY_WITH: dict[str, tuple[Callable[[RunConfig], bool], str]] = {
    "srste_decay": (lambda c: c.grad_mode == "srste", "grad_mode=srste"),
    "drop_fraction": (lambda c: c.mask_rule != "magnitude", "mask_rule=set or rigl"),
    "mask_end": (lambda c: c.mask_interval > 0, "mask_interval above 0"),
}
"""Keys that act only where another key allows it: swept elsewhere, their values train alike (or, where canonical()
resets them, collapse into one run), which a user checking a sweep must be told."""


def inert_sweeps(assignments: list[str], configs: Sequence[RunConfig]) -> list[str]:
    """A warning per swept key (two values or more) that cannot act in some of the sparse runs of `configs`."""
    warnings = []
    sparse = [config for config in configs if not config.pattern.is_dense]
    for key, values in parse_assignments(list(assignments)).items():
        if len(values) < 2 or key not in ACTS_ONLY_WITH or not sparse:
            continue
        acts, condition = ACTS_ONLY_WITH[key]
        idle = sum(not acts(config) for config in sparse)
        if idle:
            warnings.append(f"{key} acts only with {condition}: in {idle} of the {len(sparse)} sparse run(s) its "
                            f"{len(values)} values train alike (or are queued as one run); set that too to sweep it")
    return warnings


def _with_steps(swept: dict[str, list[Any]], steps: int | None) -> dict[str, list[Any]]:
    if steps is not None:
        if "steps" in swept:
            raise UsageError("give steps either as --steps or as --set steps=..., not both")
        swept["steps"] = [steps]
    return swept
