"""Engine hosts: one engine start per model across its stages, the least recently used idle host
stopped beyond `engines_kept`, idle hosts stopped for GPU training; outputs those of a fresh one."""

import pandas as pd
import pytest

from w2s_ray.config import InferenceSpec
from w2s_ray.runtime.backends import TransformersBackend


@pytest.fixture(scope="module")
def two_models():
    from w2s_ray.ladder import recipe as ladder_recipe
    from w2s_ray.ladder import tiny_ladder
    from w2s_ray.models.location import ModelRef

    tiny_ladder.build_ladder(["t1", "t2"])
    return [ModelRef(id=f"base:{r}", source=str(ladder_recipe.rung_path(r))) for r in ("t1", "t2")]


def stage(root: str, inf: InferenceSpec, model) -> list[str]:
    """One inference stage of `model` on its engine host, as `map_with_model` runs it."""
    import ray

    from w2s_ray.runtime.inference import model_dataset

    prompts = [f"to dazal {w} , do" for w in ("", "twice", "left", "right twice")] * 4
    df = pd.DataFrame({"prompt": prompts, "max_new_tokens": 6, "stop": ""}).assign(_row=range(len(prompts)))
    with model_dataset(ray.data.from_pandas(df), inf, TransformersBackend, model.at(root), model.id, {"device": "cpu"},
                       in_tasks=False) as ds:
        return ds.to_pandas().sort_values("_row")["completion"].tolist()


def starts_since(book, before: dict[str, int]) -> dict[str, int]:
    import ray

    now = ray.get(book.engine_starts.remote())
    return {m: n - before.get(m, 0) for m, n in now.items() if n > before.get(m, 0)}


def test_a_models_stages_share_one_engine_and_idle_ones_stop(ray_local, tmp_path, two_models):
    import ray

    from w2s_ray.runtime import engines

    root = str(tmp_path)
    weak, strong = two_models
    book = engines.book()
    ray.get(book.release_idle.remote())
    before = ray.get(book.engine_starts.remote())
    inf = InferenceSpec(batch_size=4, cpus_per_actor=0.5, engines_kept=1)
    first = stage(root, inf, weak)
    assert stage(root, inf, weak) == first  # labels, then its test evaluation: the same engine
    assert starts_since(book, before) == {weak.id: 1}
    stage(root, inf, strong)  # one idle host kept: the weak model's stops
    assert stage(root, inf, weak) == first
    assert starts_since(book, before) == {weak.id: 2, strong.id: 1}
    assert ray.get(book.release_idle.remote()) == 1  # a GPU training stage frees the idle engine
    assert ray.get(book.release_idle.remote()) == 0


def test_warm_worker_loads_count_as_engine_starts(ray_local, tmp_path, two_models):
    import ray

    from w2s_ray.runtime import engines
    from w2s_ray.runtime.inference import model_dataset

    root = str(tmp_path)
    weak, _ = two_models
    before = ray.get(engines.book().engine_starts.remote())
    inf = InferenceSpec(batch_size=4, cpus_per_actor=0.5)
    df = pd.DataFrame({"prompt": ["to dazal twice , do"] * 8, "max_new_tokens": 4, "stop": "",
                       "_row": range(8)})
    for _ in range(3):
        with model_dataset(ray.data.from_pandas(df), inf, TransformersBackend, weak.at(root), weak.id, {"device": "cpu"},
                           in_tasks=True) as ds:
            ds.materialize()
    # A warm worker loads the model once for all the batches it serves (two per stage here); Ray
    # may hand each stage to another idle worker, so up to one load per stage.
    loads = starts_since(engines.book(), before)[weak.id]
    assert 1 <= loads <= 3
