"""What names an artifact: inputs that change its output are in its key, layouts are not."""

from w2s_ray.artifacts import Store
from w2s_ray.config import load_config
from w2s_ray.plan import PlanBuilder, PlanStore
from w2s_ray.stages import choose, data
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
