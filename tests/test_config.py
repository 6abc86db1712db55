import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from w2s_ray import methods
from w2s_ray.capabilities import registry
from w2s_ray.checks import checked_config
from w2s_ray.cli import overrides_from, parse_args
from w2s_ray.config import ConfigError, SweepConfig, load_config, preset_names

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_presets_validate():
    assert {"tiny", "smoke"} <= set(preset_names())
    for name in preset_names():
        assert checked_config(name).name


def test_tiny_default_grid_is_every_adjacent_pair():
    assert load_config("tiny").pair_list() == [("t1", "t2"), ("t2", "t3"), ("t3", "t4")]


def test_cli_overrides_reach_nested_fields():
    args = parse_args(["--preset", "smoke", "--seeds", "0", "1", "--set", "train.lr=3e-4",
                       "--set", "splits.test=40", "--storage", "/tmp/x"])
    cfg = load_config(args.preset, overrides_from(args))
    assert cfg.seeds == [0, 1] and cfg.train.lr == 3e-4 and cfg.splits.test == 40
    assert cfg.storage == "/tmp/x"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"train.lrr": 1}, "train.lrr: unknown field; allowed fields: ['epochs'"),
        ({"bogus": 1}, "bogus: unknown field; allowed fields: ['name', 'storage'"),
        ({"inference.backend": "tgi"}, "inference.backend: Input should be 'auto', 'vllm' or 'transformers'"),
        ({"methods": ["wts", "magic"]}, "methods: unknown method 'magic'; allowed: ["),
        ({"methods": ["weak", "ceiling", "noise-1.5"]}, "'noise-1.5': the proportion must be a number in [0, 1]"),
        ({"methods": ["weak", "ceiling", "weaken-gsm"]},
         "'weaken-gsm' names capability 'gsm'; allowed: ['arithmetic', 'facts', 'scan', 'temporal']"),
        ({"methods": ["weak", "ceiling", "wts", "wts"]}, "methods: each method once"),
        ({"reward.cross_fit": 1}, "reward.cross_fit: 1 fold cannot hold samples out"),
        ({"reward.empty_fallback": "skip"}, "reward.empty_fallback: Input should be 'consistent', 'all' or 'fail'"),
        ({"methods": ["wts", "ceiling"]}, "methods: 'weak' is required"),
        ({"capabilities": ["gsm"]}, "unknown capability 'gsm'; allowed: ['arithmetic', 'creak'"),
        ({"pairs": [["t2", "t9"]]}, "pairs: unknown rung 't9'; allowed: ['t1', 't2']"),
        ({"pairs": [["t2", "t1"]]}, "weak rung must be below strong"),
        ({"train.lr": -1}, "train.lr: Input should be greater than 0"),
        ({"splits.test": 0}, "splits.test: Input should be greater than 0"),
        ({"inference.tensor_parallel_size": 2}, "gpus_per_actor must be >= tensor_parallel_size (2)"),
        ({"stage2.anchor": "base"}, "stage2.anchor: Input should be 'stage1' or 'pretrained'"),
        ({"stage2.anchor": "pretrained"}, "stage2.anchor: 'pretrained' is where stage-2 weight averaging"),
    ],
)
def test_invalid_fields_are_named_with_allowed_values(override, expected):
    with pytest.raises(ConfigError) as err:
        checked_config("smoke", override)
    assert expected in str(err.value)


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ConfigError, match=r"unknown preset 'nope'; allowed: \[.*'smoke'.*'tiny'"):
        load_config("nope")


def test_malformed_set_flag_is_rejected():
    with pytest.raises(ConfigError, match="expected FIELD=VALUE"):
        overrides_from(parse_args(["--set", "train.lr"]))


def dotted_fields(model: type[BaseModel], prefix: str = ""):
    """Every field --set reaches, walked from the pydantic models themselves."""
    for name, field in model.model_fields.items():
        yield f"{prefix}{name}", field
        args = typing.get_args(field.annotation)
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from dotted_fields(field.annotation, f"{prefix}{name}.")
        elif args and isinstance(args[-1], type) and issubclass(args[-1], BaseModel):
            item = "[]" if typing.get_origin(field.annotation) is list else ".<capability>"
            yield from dotted_fields(args[-1], f"{prefix}{name}{item}.")


def test_help_lists_every_config_field_with_type_default_and_description():
    out = subprocess.run([sys.executable, str(ROOT / "sweeps" / "scale_grid.py"), "--help"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT, check=True).stdout
    text = " ".join(out.split())  # descriptions wrap over lines

    def listed(pattern: str) -> bool:
        return re.search(pattern, out, re.MULTILINE) is not None

    fields = list(dotted_fields(SweepConfig))
    assert len(fields) > 50
    for name, field in fields:
        assert field.description, f"{name} has no description"
        assert listed(rf"^  {re.escape(name)}\b"), f"--help does not list {name}"
        assert " ".join(field.description.split()) in text, f"--help lacks {name}'s description"
    assert listed(r"^  train\.lr +float = 1e-05\. AdamW")
    assert listed(r"^  inference\.backend +auto \| vllm \| transformers = 'auto'\.")
    assert listed(r"^  splits\.test +int = required\.")
    assert "--seeds SEED [SEED ...]" in out and "one trial per (pair, seed)" in text
    for name in methods.allowed():
        assert listed(rf"^  {re.escape(name)} "), f"--help does not list method {name}"
    for cap in registry.names():
        assert re.search(rf"\b{cap}\b", text), f"--help does not list capability {cap}"


def test_weight_averaging_is_refused_where_a_model_trains_sharded():
    with pytest.raises(ConfigError, match=r"train: .*toward_base: weight averaging .* 'ddp' only"):
        load_config("smoke", {"train.toward_base": 0.5, "train.strategy": "fsdp"})
    with pytest.raises(ConfigError, match=r"train.toward_base: the resource plan trains rung '\w+' with fsdp"):
        checked_config("qwen15-scale", {"train.toward_base": 0.5})
    assert load_config("tiny").train.toward_base == 0.5
