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
