"""RunConfig: MISSION section 3 defaults, --set value parsing and validation, serialization and the run hash."""

import dataclasses
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnmtd3.config import RunConfig, canonical, config_keys, key_defaults, parse_assignments, parse_value
from rnmtd3.errors import UsageError
from rnmtd3.patterns import Pattern


def base(**changes) -> RunConfig:
    return RunConfig(env="Hopper-v5", pattern=Pattern.parse("2:4"), seed=0, **changes)


def build(key: str, text: str) -> RunConfig:
    """What `--set key=text` does: parse the text, then build (and so validate) the config."""
    return base(**{key: parse_value(key, text)})


def test_defaults_follow_mission_section_3():
    config = base()
    assert config.hidden == (256, 256)
    assert config.lr == 3e-4
    assert config.batch_size == 256
    assert config.buffer_size == 1_000_000
    assert config.start_steps == 25_000
    assert config.expl_noise == 0.1
    assert config.policy_noise == 0.2
    assert config.noise_clip == 0.5
    assert config.policy_delay == 2
    assert config.tau == 0.005
    assert config.gamma == 0.99
    assert config.steps == 1_000_000
    assert config.eval_interval == 5_000
    assert config.eval_episodes == 10


def test_defaults_follow_mission_section_2():
    config = base()
    assert config.grad_mode == "masked"
    assert config.srste_decay == 2e-4
    assert config.sparse_io is True
    assert config.device == "cpu"


def test_every_mission_key_is_a_config_key():
    mission_keys = {
        "steps", "start_steps", "batch_size", "buffer_size", "lr", "gamma", "tau", "expl_noise", "policy_noise",
        "noise_clip", "policy_delay", "hidden", "eval_interval", "eval_episodes", "checkpoint_interval",
        "mask_interval", "grad_mode", "srste_decay", "sparse_io", "device",
    }
    keys = set(config_keys())
    assert mission_keys <= keys
    assert not {"env", "pattern", "seed"} & keys
    assert set(key_defaults()) == keys and all(meaning for _, meaning in key_defaults().values())
    assert key_defaults()["hidden"][0] == "256x256" and key_defaults()["sparse_io"][0] == "true"


@pytest.mark.parametrize(
    "key, text, value",
    [
        ("hidden", "256x256", (256, 256)),
        ("hidden", "64X32x16", (64, 32, 16)),
        ("hidden", "400", (400,)),
        ("steps", "1e6", 1_000_000),
        ("steps", "3000", 3000),
        ("lr", "1e-3", 1e-3),
        ("gamma", "0.98", 0.98),
        ("sparse_io", "false", False),
        ("sparse_io", "True", True),
        ("sparse_io", "0", False),
        ("grad_mode", "srste", "srste"),
        ("mask_interval", "0", 0),
        ("device", "cuda:1", "cuda:1"),
    ],
)
def test_parse_value_good(key, text, value):
    parsed = parse_value(key, text)
    assert parsed == value and type(parsed) is type(value)
    assert getattr(build(key, text), key) == value


@pytest.mark.parametrize(
    "key, text",
    [
        ("steps", "-1"),
        ("steps", "0"),
        ("steps", "1.5"),
        ("steps", "abc"),
        ("start_steps", "-5"),
        ("hidden", "abc"),
        ("hidden", "256x"),
        ("hidden", "0x64"),
        ("hidden", "-1x64"),
        ("hidden", ""),
        ("grad_mode", "foo"),
        ("lr", "0"),
        ("lr", "nan"),
        ("lr", "inf"),
        ("lr", "fast"),
        ("gamma", "nan"),
        ("tau", "inf"),
        ("expl_noise", "inf"),
        ("policy_noise", "nan"),
        ("noise_clip", "inf"),
        ("srste_decay", "nan"),
        ("gamma", "0"),
        ("gamma", "1.5"),
        ("tau", "0"),
        ("expl_noise", "-0.1"),
        ("srste_decay", "-1"),
        ("sparse_io", "maybe"),
        ("eval_episodes", "0"),
        ("eval_interval", "-1"),
        ("checkpoint_interval", "0"),
        ("mask_interval", "-1"),
        ("policy_delay", "0"),
        ("batch_size", "0"),
        ("device", "tpu"),
    ],
)
def test_bad_values_raise_usage_error(key, text):
    with pytest.raises(UsageError, match=key):
        build(key, text)


@pytest.mark.parametrize("key", ["nope", "env", "pattern", "seed", "Steps", ""])
def test_unknown_key_raises_usage_error(key):
    with pytest.raises(UsageError):
        parse_value(key, "1")


INT32_MAX = 2**31 - 1


@pytest.mark.parametrize("key", ["steps", "start_steps", "buffer_size", "eval_interval", "checkpoint_interval",
                                 "mask_interval", "policy_delay", "eval_episodes", "hidden"])
def test_integers_beyond_a_32_bit_column_are_refused_naming_the_key_and_the_limit(key):
    big = {"steps": INT32_MAX, "buffer_size": INT32_MAX}  # so that the key under test is the one too large
    with pytest.raises(UsageError, match=rf"{key}=.*at most {INT32_MAX}"):
        base(**{**big, key: (64, INT32_MAX + 1) if key == "hidden" else INT32_MAX + 1})
    with pytest.raises(UsageError, match=rf"{key}=.*at most {INT32_MAX}"):
        build(key, f"64x{INT32_MAX + 1}" if key == "hidden" else "1e12")
    base(**{**big, key: (64, INT32_MAX) if key == "hidden" else INT32_MAX})  # the limit itself is fine


def test_a_seed_beyond_a_32_bit_column_is_refused():
    with pytest.raises(UsageError, match=rf"seed=.*at most {INT32_MAX}"):
        RunConfig(env="Hopper-v5", pattern=Pattern.dense(), seed=INT32_MAX + 1)


def test_a_batch_larger_than_the_replay_capacity_is_refused():
    with pytest.raises(UsageError, match=r"batch_size=512: larger than the replay capacity .* = 256"):
        base(batch_size=512, buffer_size=256)
    with pytest.raises(UsageError, match=r"batch_size=256: larger than the replay capacity .* = 100"):
        base(steps=100)  # the trainer's buffer holds min(buffer_size, steps)
    assert base(batch_size=256, buffer_size=256).batch_size == 256


def test_sparse_io_false_with_one_hidden_layer_is_refused_unless_dense():
    with pytest.raises(UsageError, match="sparse_io=false with one hidden layer"):
        base(sparse_io=False, hidden=(256,))
    base(sparse_io=False, hidden=(256, 256))  # the middle layer stays sparse
    base(sparse_io=True, hidden=(256,))
    RunConfig(env="Hopper-v5", pattern=Pattern.dense(), seed=0, sparse_io=False, hidden=(256,))


def test_bad_seed_raises():
    with pytest.raises(UsageError):
        RunConfig(env="Hopper-v5", pattern=Pattern.dense(), seed=-1)


def test_parse_assignments_sweeps_comma_lists():
    assert parse_assignments(["lr=1e-3,3e-4", "hidden=64x64"]) == {"lr": [1e-3, 3e-4], "hidden": [(64, 64)]}
    for bad in ["lr", "=1", "lr=", "nope=1", "hidden=64x64,abc"]:
        with pytest.raises(UsageError):
            parse_assignments([bad])


# -- serialization and identity ------------------------------------------------------------------
patterns = st.sampled_from(["dense", "2:4", "1:4", "1:8", "4:8", "1:2"]).map(Pattern.parse)
configs = st.builds(
    RunConfig,
    env=st.sampled_from(["Hopper-v5", "Ant-v5", "Pendulum-v1"]),
    pattern=patterns,
    seed=st.integers(0, 2**31 - 1),
    steps=st.integers(4096, 10**7),  # at least the largest batch_size: a batch never outgrows the replay buffer
    start_steps=st.integers(0, 10**5),
    batch_size=st.integers(1, 4096),
    lr=st.floats(1e-6, 1.0),
    gamma=st.floats(0.01, 1.0),
    tau=st.floats(1e-4, 1.0),
    expl_noise=st.floats(0.0, 1.0),
    hidden=st.lists(st.integers(1, 1024), min_size=2, max_size=4).map(tuple),  # sparse_io=false needs two
    mask_interval=st.integers(0, 10**5),
    grad_mode=st.sampled_from(["masked", "ste", "srste"]),
    srste_decay=st.floats(0.0, 1.0),
    sparse_io=st.booleans(),
    device=st.sampled_from(["cpu", "cuda", "cuda:1"]),
)


@settings(max_examples=100)
@given(configs)
def test_dict_round_trip(config):
    data = config.to_dict()
    assert isinstance(data["pattern"], str) and isinstance(data["hidden"], list)
    assert RunConfig.from_dict(data) == config
    assert RunConfig.from_dict(json.loads(config.to_json())) == config
    assert RunConfig.from_dict(json.loads(config.to_json())).hash == config.hash


def test_from_dict_fills_missing_keys_with_defaults_and_refuses_unknown():
    data = {"env": "Hopper-v5", "pattern": "1:8", "seed": 3}
    assert RunConfig.from_dict(data) == RunConfig(env="Hopper-v5", pattern=Pattern(1, 8), seed=3)
    with pytest.raises(UsageError):
        RunConfig.from_dict({**data, "bogus": 1})


def _other_value(name: str, value):
    """A valid value different from `value` for the field `name`."""
    special = {
        "env": "Ant-v5",
        "pattern": Pattern.parse("1:8"),
        "gamma": 0.5,
        "tau": 0.5,
        "hidden": (64, 64),
        "grad_mode": "ste",
        "mask_rule": "rigl",
        "sparse_init": "scaled",
        "precision": "bf16",
        "device": "cuda",
    }
    if name in special:
        return special[name]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 0.5 if value > 0 else 0.25
    raise AssertionError(f"test needs an alternative value for the new key {name!r}")


def test_hash_equal_for_equal_configs():
    assert base().hash == base().hash
    assert base(hidden=(64, 64)).hash == RunConfig.from_dict(base(hidden=(64, 64)).to_dict()).hash
    assert len(base().hash) >= 16


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(RunConfig)])
def test_hash_differs_when_any_key_differs(name):
    config = base()
    changed = config.replace(**{name: _other_value(name, getattr(config, name))})
    assert changed != config
    assert changed.hash != config.hash


@given(configs, configs)
def test_hash_equal_iff_configs_equal(a, b):
    assert (a.hash == b.hash) == (a == b)


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        base().steps = 5  # type: ignore[misc]
    assert math.isclose(base().replace(lr=1e-3).lr, 1e-3)


# -- the methods' keys --------------------------------------------------------------------------------
@pytest.mark.parametrize("values, message", [
    ({"mask_rule": "rigl", "grad_mode": "ste"}, "needs grad_mode=masked"),
    ({"mask_rule": "set", "grad_mode": "srste"}, "needs grad_mode=masked"),
    ({"mask_rule": "set", "mask_interval": 0}, "never moves a mask"),
    ({"mask_rule": "RIGL"}, "mask_rule"),
    ({"sparse_init": "kaiming"}, "sparse_init"),
    ({"drop_fraction": 0.0}, "drop_fraction"),
    ({"drop_fraction": 1.5}, "drop_fraction"),
    ({"mask_end": 0.0}, "mask_end"),
    ({"mask_end": 2.0}, "mask_end"),
])
def test_meaningless_method_settings_are_refused(values, message):
    with pytest.raises(UsageError, match=message):
        RunConfig(env="Hopper-v5", pattern=Pattern(1, 4), seed=0, **values)


def test_canonical_resets_the_keys_a_run_ignores():
    sparse = RunConfig(env="Hopper-v5", pattern=Pattern(1, 4), seed=0)
    assert canonical(sparse.replace(drop_fraction=0.1)) == sparse  # magnitude drops nothing by fraction
    assert canonical(sparse.replace(mask_interval=0, mask_end=0.5)) == sparse.replace(mask_interval=0)
    rigl = sparse.replace(mask_rule="rigl", drop_fraction=0.1, mask_end=0.5)
    assert canonical(rigl) == rigl
    dense = RunConfig(env="Hopper-v5", pattern=Pattern.dense(), seed=0)
    assert canonical(dense.replace(mask_rule="rigl", sparse_init="scaled", drop_fraction=0.1)) == dense
