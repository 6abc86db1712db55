import pytest

from w2s_ray.cli import overrides_from, parse_args
from w2s_ray.config import ConfigError, load_config, preset_names


def test_shipped_presets_validate():
    assert {"tiny", "smoke"} <= set(preset_names())
    for name in preset_names():
        assert load_config(name).name


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
    ],
)
def test_invalid_fields_are_named_with_allowed_values(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config("smoke", override)
    assert expected in str(err.value)


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ConfigError, match=r"unknown preset 'nope'; allowed: \[.*'smoke'.*'tiny'"):
        load_config("nope")


def test_malformed_set_flag_is_rejected():
    with pytest.raises(ConfigError, match="expected FIELD=VALUE"):
        overrides_from(parse_args(["--set", "train.lr"]))
