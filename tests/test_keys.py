"""What names an artifact: inputs that change its output are in its key, layouts are not."""

from w2s_ray.artifacts import Store
from w2s_ray.config import load_config
from w2s_ray.plan import PlanBuilder, PlanStore
from w2s_ray.runtime import choose
from w2s_ray.stages import data
from w2s_ray.stages.context import StageContext
from w2s_ray.stages.generate import generate


def generation_key(tmp_path, **overrides) -> str:
    config = load_config("smoke", {"storage": str(tmp_path), **overrides})
    store = PlanStore(config.storage)
    ctx = StageContext(config, store, PlanBuilder(Store(config.storage)), seed=0)
    return generate(ctx, ctx.base("t1"), data.split_table(ctx, "test", with_gold_labels=True)).key


def test_generation_keys_name_the_backend_only_where_outputs_may_differ(tmp_path):
    fp32_cpu = {b: generation_key(tmp_path, **{"inference.backend": b}) for b in ("vllm", "transformers", "auto")}
    assert len(set(fp32_cpu.values())) == 1, "float32 on CPU: both backends' outputs are equal"
    bf16 = {b: generation_key(tmp_path, **{"inference.backend": b, "inference.dtype": "bfloat16"})
            for b in ("vllm", "transformers")}
    assert len({*bf16.values(), fp32_cpu["auto"]}) == 3
    on_gpu = {b: generation_key(tmp_path, **{"inference.backend": b, "inference.gpus_per_actor": 1})
              for b in ("vllm", "transformers", "auto")}
    assert on_gpu["vllm"] != on_gpu["transformers"]
    assert on_gpu["auto"] == on_gpu["vllm" if choose.vllm_installed() else "transformers"]


def test_a_mirror_is_keyed_by_its_content_not_its_path(tmp_path):
    import shutil

    import pandas as pd

    from tests.test_datasets import write_upstream
    from w2s_ray.capabilities import registry

    write_upstream(tmp_path / "a", "sciq")
    shutil.copytree(tmp_path / "a", tmp_path / "moved")
    sciq = registry.get("sciq")
    key = sciq.key_fields(str(tmp_path / "a"))
    assert sciq.key_fields(str(tmp_path / "moved")) == key
    edited = tmp_path / "moved" / "sciq" / "test.parquet"
    df = pd.read_parquet(edited)
    df.loc[0, "correct_answer"] = "argon"
    df.to_parquet(edited)
    assert sciq.key_fields(str(tmp_path / "moved")) != key


def test_the_golden_check_names_the_stage_whose_output_changed_under_its_key(tmp_path, monkeypatch):
    import pandas as pd
    import pytest

    from tests import golden_outputs
    from w2s_ray.artifacts import Artifact, StageLog

    store = Store(str(tmp_path / "store"))
    art = Artifact.make("relabel", 1, [], {"x": 1})

    def commit(labels: list[str]) -> None:
        attempt, folder = store.new_attempt(art)
        store.write_table(f"{folder}/table.parquet", pd.DataFrame({"uid": ["a", "b"], "label_text": labels}))
        store.commit(art, attempt, {})

    commit(["yes", "no"])
    StageLog(store, "golden", "r1").record(art, "built", 1.0, tag="relabel")
    golden = tmp_path / "golden.json"
    golden.write_text('{"keys": {"relabel/other": "relabel"}, "outputs": {}}')
    with pytest.raises(AssertionError, match=r"new keys of \['relabel'\]"):
        golden_outputs.check(store, "golden", golden)
    with monkeypatch.context() as m:
        m.setattr(golden_outputs, "UPDATE", True)
        golden_outputs.check(store, "golden", golden)
    golden_outputs.check(store, "golden", golden)
    commit(["yes", "yes"])  # the same key, another output
    with pytest.raises(AssertionError, match=r"relabel/\w+ \(relabel\): bump VERSION of relabel"):
        golden_outputs.check(store, "golden", golden)
    # Another platform's bits: its keys are checked, its outputs are not compared, and it says so.
    monkeypatch.setattr(golden_outputs, "platform_id", lambda: "x86_64 AVX512 torch 2.13.0+cpu")
    with pytest.warns(UserWarning, match=r"keys checked; no outputs recorded for platform 'x86_64 AVX512"):
        golden_outputs.check(store, "golden", golden)


def test_stage2_settings_name_only_the_second_stages(tmp_path):
    from w2s_ray.methods import targets

    def model_ids(**overrides) -> dict[str, str]:
        config = load_config("smoke", {"storage": str(tmp_path), "methods": ["weak", "wts", "ceiling", "ours",
                                                                              "ours-random", "ours-one-stage"],
                                       **overrides})
        ctx = StageContext(config, PlanStore(config.storage), PlanBuilder(Store(config.storage)), seed=0)
        test = data.split_table(ctx, "test", with_gold_labels=True)
        return {m: targets(ctx, m, "t1", "t2", test)[0].model.id for m in config.methods}

    default, unset, lower = model_ids(), model_ids(**{"stage2.lr": None}), model_ids(**{"stage2.lr": 1e-5})
    assert unset == default, "an unset stage-2 field keeps every key"
    assert {m for m in default if lower[m] != default[m]} == {"ours", "ours-random"}
