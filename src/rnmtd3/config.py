"""RunConfig: every hyperparameter of a run in one frozen, typed, validated value.

The same object is the CLI's `--set` vocabulary, the registry's config column, the hash that identifies a run,
and the report's labels, so all of them agree by construction.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import UsageError
from .patterns import Pattern

GRAD_MODES = ("masked", "ste", "srste")
MASK_RULES = ("magnitude", "set", "rigl")
"""How masks move within a group at a mask update; sparsity.RULES holds each one's code."""
SPARSE_INITS = ("dense", "scaled")
DB_INT_MAX = 2**31 - 1
"""The largest integer the registry's Integer columns (seed, steps_total, ...) hold: 32-bit on PostgreSQL."""
PRECISIONS = ("fp32", "bf16")


def _key(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class RunConfig:
    env: str = field(metadata={"help": "Gymnasium id (short names such as Hopper resolve to Hopper-v5)"})
    pattern: Pattern = field(metadata={"help": "N:M or unstructured:S pattern of every sparse layer, or dense"})
    seed: int = field(metadata={"help": "seed of networks, replay sampling, exploration and the training env"})

    steps: int = _key(1_000_000, "environment steps of training")
    start_steps: int = _key(25_000, "initial steps with uniform random actions and no updates")
    batch_size: int = _key(256, "transitions per gradient step")
    buffer_size: int = _key(1_000_000, "replay capacity in transitions")
    lr: float = _key(3e-4, "Adam learning rate of actor and critics")
    gamma: float = _key(0.99, "discount factor")
    tau: float = _key(0.005, "Polyak rate of the target networks")
    expl_noise: float = _key(0.1, "std of the Gaussian exploration noise, times the max action")
    policy_noise: float = _key(0.2, "std of the target policy smoothing noise, times the max action")
    noise_clip: float = _key(0.5, "clip of the target policy smoothing noise, times the max action")
    policy_delay: int = _key(2, "critic updates per actor and target update")
    hidden: tuple[int, ...] = _key((256, 256), "hidden layer widths, written 256x256")
    eval_interval: int = _key(5_000, "environment steps between evaluations (one also runs before training)")
    eval_episodes: int = _key(10, "episodes per evaluation, without exploration noise")
    checkpoint_interval: int = _key(50_000, "steps between checkpoints (taken at the next episode boundary)")
    mask_interval: int = _key(5_000, "gradient steps between N:M mask recomputations; 0 keeps the first mask")
    grad_mode: str = _key("masked", "masked | ste | srste: which latent weights the gradient updates")
    srste_decay: float = _key(2e-4, "SR-STE decay of pruned latent weights (grad_mode=srste): before each optimizer "
                                    "step, W[pruned] *= 1 - lr * srste_decay")
    mask_rule: str = _key("magnitude", "magnitude | set | rigl: how a mask update moves the zeros within each group")
    drop_fraction: float = _key(0.3, "set/rigl: fraction of active weights dropped and regrown at a mask update, "
                                     "decayed on a cosine to 0 at mask_end")
    mask_end: float = _key(1.0, "fraction of the gradient steps after which masks stay fixed")
    sparse_init: str = _key("dense", "dense | scaled: prune a dense init, or rescale it so each sparse layer starts "
                                     "with a dense layer's output variance")
    sparse_io: bool = _key(True, "make the first and last layers sparse too")
    precision: str = _key("fp32", "fp32 | bf16: bf16 autocasts the matrix products, weights stay fp32")
    device: str = _key("cpu", "torch device: cpu, cuda, cuda:1, ...")

    def __post_init__(self) -> None:
        for name in _FIELDS:
            value = getattr(self, name)
            for number in value if isinstance(value, tuple) else (value,):
                if isinstance(number, int) and not isinstance(number, bool) and number > DB_INT_MAX:
                    raise UsageError(f"bad value {name}={value}: at most {DB_INT_MAX} (a 32-bit integer)")
                if isinstance(number, float) and not math.isfinite(number):
                    raise UsageError(f"bad value {name}={value}: must be a finite number")
        positive = ("steps", "batch_size", "buffer_size", "policy_delay", "eval_interval", "eval_episodes",
                    "checkpoint_interval")
        for name in positive:
            if getattr(self, name) <= 0:
                raise UsageError(f"bad value {name}={getattr(self, name)}: must be a positive integer")
        for name in ("start_steps", "mask_interval", "seed"):
            if getattr(self, name) < 0:
                raise UsageError(f"bad value {name}={getattr(self, name)}: must be >= 0")
        for name in ("lr", "expl_noise", "policy_noise", "noise_clip", "srste_decay"):
            value = getattr(self, name)
            if value < 0 or (name == "lr" and value == 0):
                raise UsageError(f"bad value {name}={value}: must be " + ("> 0" if name == "lr" else ">= 0"))
        for name in ("gamma", "tau"):
            if not 0 < getattr(self, name) <= 1:
                raise UsageError(f"bad value {name}={getattr(self, name)}: must be in (0, 1]")
        if not self.hidden or any(h <= 0 for h in self.hidden):
            raise UsageError(f"bad value hidden={self.hidden}: write positive widths like 256x256")
        if self.grad_mode not in GRAD_MODES:
            raise UsageError(f"bad value grad_mode={self.grad_mode!r}: choose one of {', '.join(GRAD_MODES)}")
        if self.mask_rule not in MASK_RULES:
            raise UsageError(f"bad value mask_rule={self.mask_rule!r}: choose one of {', '.join(MASK_RULES)}")
        if self.sparse_init not in SPARSE_INITS:
            raise UsageError(f"bad value sparse_init={self.sparse_init!r}: choose one of {', '.join(SPARSE_INITS)}")
        for name in ("drop_fraction", "mask_end"):
            if not 0 < getattr(self, name) <= 1:
                raise UsageError(f"bad value {name}={getattr(self, name)}: must be in (0, 1]")
        if self.mask_rule != "magnitude" and self.grad_mode != "masked":
            raise UsageError(f"mask_rule={self.mask_rule} needs grad_mode=masked: it regrows weights from zero, "
                             f"while grad_mode={self.grad_mode} trains the pruned weights")
        if self.mask_rule != "magnitude" and self.mask_interval == 0:
            raise UsageError(f"mask_rule={self.mask_rule} with mask_interval=0 never moves a mask: "
                             "set mask_interval > 0 or keep mask_rule=magnitude")
        if self.precision not in PRECISIONS:
            raise UsageError(f"bad value precision={self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        if not re.fullmatch(r"cpu|cuda(:\d+)?", self.device):
            raise UsageError(f"bad value device={self.device!r}: use cpu or cuda[:index]")
        capacity = min(self.buffer_size, self.steps)  # the trainer's replay buffer never outgrows the run
        if self.batch_size > capacity:
            raise UsageError(f"bad value batch_size={self.batch_size}: larger than the replay capacity "
                             f"min(buffer_size, steps) = {capacity}")
        if not self.sparse_io and len(self.hidden) < 2 and not self.pattern.is_dense:
            raise UsageError(f"sparse_io=false with one hidden layer leaves no {self.pattern} layer (a dense network "
                             "labelled sparse): add a hidden layer or keep sparse_io=true")

    # -- identity and serialization -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types: the pattern as text, hidden as a list."""
        out = dataclasses.asdict(self)
        out["pattern"] = str(self.pattern)
        out["hidden"] = list(self.hidden)
        return out

    @staticmethod
    def from_dict(data: dict[str, Any]) -> "RunConfig":
        """Inverse of to_dict; keys missing from an older record take today's defaults."""
        unknown = set(data) - set(config_keys()) - {"env", "pattern", "seed"}
        if unknown:
            raise UsageError(f"unknown config key(s): {', '.join(sorted(unknown))}")
        missing = {"env", "pattern", "seed"} - set(data)
        if missing:
            raise UsageError(f"config lacks {', '.join(sorted(missing))}")
        values = dict(data)
        for key, value in values.items():
            if key not in ("pattern", "hidden") and not _json_type_ok(key, value):
                raise UsageError(f"bad stored value {key}={value!r}: expected {_json_type(key).__name__}")
            if _json_type(key) is float:
                values[key] = float(value)  # 1 and 1.0 are one value, and one identity
        values["pattern"] = Pattern.parse(values["pattern"])
        if "hidden" in values:
            hidden = values["hidden"]
            if not isinstance(hidden, list) or not all(isinstance(h, int) and not isinstance(h, bool) for h in hidden):
                raise UsageError(f"bad stored value hidden={hidden!r}: expected a list of widths")
            values["hidden"] = tuple(hidden)
        return RunConfig(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def identity(self) -> dict[str, Any]:
        """env, pattern, seed and the keys that differ from their defaults: what makes this run this run.

        A key left at its default is not part of the identity, so adding a key with a default to RunConfig changes
        no earlier run's hash: re-queueing an old sweep after an upgrade finds every run already there.
        """
        defaults = json_defaults(type(self))
        return {key: value for key, value in self.to_dict().items()
                if key in IDENTITY_FIELDS or value != defaults[key]}

    @property
    def hash(self) -> str:
        """The run's identity as a digest: equal configs give equal hashes, and new default keys change none."""
        return identity_hash(self.identity())

    @property
    def updates_networks(self) -> bool:
        """False when every step is a random start step (steps <= start_steps): such a run makes no gradient update
        yet reports a return, a random-policy baseline that a short smoke test can mistake for a trained agent."""
        return self.steps > self.start_steps

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)


_FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}
IDENTITY_FIELDS = ("env", "pattern", "seed")


def identity_hash(identity: dict[str, Any]) -> str:
    """Digest of an identity dict (see RunConfig.identity); migration 0003 keeps a frozen copy of this rule."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


SPARSITY_KEYS = ("mask_interval", "grad_mode", "srste_decay", "mask_rule", "drop_fraction", "mask_end", "sparse_init",
                 "sparse_io")
"""Keys that change nothing in a dense run: a sweep over them queues its dense baseline once."""


def canonical(config: RunConfig) -> RunConfig:
    """The config with the keys it ignores at their defaults (same run, same hash): SPARSITY_KEYS when the pattern
    is dense, drop_fraction under mask_rule=magnitude (which drops nothing by fraction), mask_end when masks never
    move (mask_interval=0)."""
    if config.pattern.is_dense:
        return config.replace(**{key: _FIELDS[key].default for key in SPARSITY_KEYS})
    ignored = []
    if config.mask_rule == "magnitude":
        ignored.append("drop_fraction")
    if config.mask_interval == 0:
        ignored.append("mask_end")
    return config.replace(**{key: _FIELDS[key].default for key in ignored})


def _json_type(key: str) -> type:
    return type(_FIELDS[key].default) if key not in ("env", "seed") else (str if key == "env" else int)


def _json_type_ok(key: str, value: Any) -> bool:
    """A stored value of the key's type: an int where an int is meant (not 1.5, not true), any number for a float."""
    kind = _json_type(key)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def json_defaults(config_class: type = RunConfig) -> dict[str, Any]:
    """Every key's default as it stands in a stored config's JSON: what a run queued before a key existed ran with."""
    return {f.name: json_value(f.default) for f in dataclasses.fields(config_class) if f.name not in IDENTITY_FIELDS}


def stored_config(text: str) -> dict:
    """A run's stored config as a dict, with the keys it lacks at their defaults (a run queued before a key existed
    ran with its default, so it is that setting); {} where it does not read as one (edited by hand, cut short): its
    columns stay blank, and one such row never stops the others from being exported."""
    try:
        config = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return json_defaults() | config if isinstance(config, dict) else {}


def json_value(value: Any) -> Any:
    """A parsed value as it stands in a stored config's JSON (hidden as a list)."""
    return list(value) if isinstance(value, tuple) else value


def config_keys() -> list[str]:
    """The keys a user may set (`--set key=value`): everything but env, pattern and seed."""
    return [name for name in _FIELDS if name not in ("env", "pattern", "seed")]


def key_defaults() -> dict[str, tuple[str, str]]:
    """key -> (default as a user writes it, help text): what `rnm keys` shows."""
    return {name: (written(_FIELDS[name].default), _FIELDS[name].metadata["help"]) for name in config_keys()}


def written(value: Any) -> str:
    """A value as `--set` takes it: hidden as 256x256 (from a tuple or a stored list), booleans in lower case."""
    if isinstance(value, (tuple, list)):
        return "x".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) else str(value)


def parse_value(key: str, text: str) -> Any:
    """Turn the text of `--set key=text` into the key's type, or raise UsageError naming the key."""
    if key not in config_keys():
        raise UsageError(f"unknown config key {key!r}; valid keys: {', '.join(config_keys())}")
    default = _FIELDS[key].default
    raw = text.strip()
    try:
        if key == "hidden":
            return tuple(int(part) for part in raw.lower().split("x"))
        if isinstance(default, bool):
            lowered = raw.lower()
            if lowered in ("true", "1", "yes", "on"):
                return True
            if lowered in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if isinstance(default, int):
            number = float(raw)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if isinstance(default, float):
            return float(raw)
        return raw
    except ValueError:
        kind = "widths like 256x256" if key == "hidden" else type(default).__name__
        raise UsageError(f"bad value {key}={text!r}: expected {kind}") from None


def parse_assignments(items: list[str]) -> dict[str, list[Any]]:
    """`["lr=1e-3,3e-4", "hidden=64x64"]` -> {"lr": [0.001, 0.0003], "hidden": [(64, 64)]} (a list sweeps)."""
    swept: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise UsageError(f"bad --set {item!r}: write key=value or key=v1,v2")
        swept[key] = [parse_value(key, value) for value in values.split(",")]
        _refuse_repeats(key, values, swept[key])
    return swept


def _refuse_repeats(key: str, text: str, values: list[Any]) -> None:
    """A sweep list that names a value twice is a mistake, most often `hidden=256,256` written for SB3's
    `net_arch=[256, 256]`: it would queue one network with a single hidden layer of 256, not two layers."""
    repeated = next((value for i, value in enumerate(values) if value in values[:i]), None)
    if repeated is None:
        return
    shown = "x".join(map(str, repeated)) if key == "hidden" else repeated
    fix = ""
    if key == "hidden" and all(len(widths) == 1 for widths in values):  # 256,256: one layer each
        fix = f"; the layers of one network are written with x: hidden={'x'.join(str(w) for w, in values)}"
    raise UsageError(f"bad --set {key}={text}: a comma list sweeps {key} (one run per value) and names {shown} "
                     f"twice{fix}")
