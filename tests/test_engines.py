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


def test_a_warm_worker_loads_a_model_once_for_every_stage_it_serves_and_each_load_is_counted(
        ray_local, tmp_path, two_models):
    """What warm workers guarantee: a worker process loads a model once and serves each later
    batch of it, in any stage, from that copy; Ray picks the worker of each batch, so the loads
    are one per worker process that served the model, not one in all, and the book counts each."""
    import os
    import uuid

    import numpy as np
    import ray

    from w2s_ray.runtime import engines
    from w2s_ray.runtime.inference import model_dataset

    class Traced(TransformersBackend):
        """Tags each batch with its worker process and the model copy that decoded it."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.copy = uuid.uuid4().hex

        def __call__(self, batch):
            out = super().__call__(batch)
            return out | {"pid": np.full(len(out["prompt"]), os.getpid()),
                          "copy": np.full(len(out["prompt"]), self.copy)}

    root = str(tmp_path)
    weak, _ = two_models
    before = ray.get(engines.book().engine_starts.remote())
    inf = InferenceSpec(batch_size=4, cpus_per_actor=0.5)
    df = pd.DataFrame({"prompt": ["to dazal twice , do"] * 8, "max_new_tokens": 4, "stop": "",
                       "_row": range(8)})
    served = []
    for stage in range(3):
        with model_dataset(ray.data.from_pandas(df), inf, Traced, weak.at(root), weak.id, {"device": "cpu"},
                           in_tasks=True) as ds:
            served.append(ds.to_pandas()[["pid", "copy"]].assign(stage=stage))
    served = pd.concat(served)
    assert len(served) == 3 * len(df)
    copies = served.groupby("pid")["copy"].nunique()
    assert (copies == 1).all(), f"a worker loaded the model again: copies per worker {copies.to_dict()}"
    assert served.groupby("pid")["stage"].nunique().max() >= 2, \
        f"no worker served two stages, so none kept its model between them: {served.to_dict('list')}"
    assert starts_since(engines.book(), before) == {weak.id: served["copy"].nunique()}
