"""Engine hosts: one engine start per model across its stages, the least recently used idle host
stopped beyond `engines_kept`, idle hosts stopped for GPU training; outputs those of a fresh one."""

import numpy as np
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


def idle(trial, gpus, used) -> dict:
    return {"leases": 0, "trial": trial, "gpus": gpus, "used": used}


def test_training_stops_its_own_trials_idle_hosts_and_others_only_for_gpus_it_lacks():
    from w2s_ray.runtime.engines import to_stop_for_training

    hosts = {"a-1": idle("A", 1.0, 5.0), "a-busy": {**idle("A", 1.0, 1.0), "leases": 1},
             "b-old": idle("B", 1.0, 1.0), "b-new": idle("B", 1.0, 9.0), "b-cpu": idle("B", 0.0, 0.0)}
    assert to_stop_for_training(hosts, "A", free_gpus=4.0, need_gpus=4.0) == ["a-1"]
    assert to_stop_for_training(hosts, "A", free_gpus=1.0, need_gpus=2.0) == ["a-1"]
    # Short by two: other trials' GPU hosts, least recently used first; a CPU host frees nothing.
    assert to_stop_for_training(hosts, "A", free_gpus=0.0, need_gpus=3.0) == ["a-1", "b-old", "b-new"]
    assert to_stop_for_training(hosts, "C", free_gpus=0.0, need_gpus=1.0) == ["b-old"]


def test_a_training_stage_leaves_the_other_trials_engine_running(ray_local, two_models):
    """Two trials (each its own placement group, as Tune gives them) each leave an idle engine
    host; the first trial's GPU training stage stops its own host, and the second trial's host
    still decodes."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from w2s_ray.runtime import engines

    batch = {"prompt": np.array(["to dazal twice , do"], dtype=object), "max_new_tokens": np.array([4]),
             "stop": np.array([""], dtype=object)}
    inf = InferenceSpec(cpus_per_actor=0.5, engines_kept=4)

    @ray.remote(num_cpus=0)
    def trial_stage(model) -> tuple[str, str]:
        """An inference stage of the calling trial: its host leased, used, released (kept idle)."""
        init = {"backend": TransformersBackend, "location": model.at("/"), "torch_threads": 1,
                "dtype": "float32", "options": {"device": "cpu"}, "gpus": 0.0}
        name = engines.host_name(model.id, model.source, inf, {"device": "cpu"}, 0)
        spec = {"cpus": inf.cpus_per_actor, "gpus": 0.0, "init": init}
        with engines.leased_hosts(engines.book(), model.id, [name], spec, inf.engines_kept) as (host,):
            ray.get(host.__call__.remote(dict(batch)))
        return engines.current_trial(), name

    @ray.remote(num_cpus=0)
    def before_gpu_training() -> list[str]:
        return ray.get(engines.existing_book().release_for_training.remote(engines.current_trial(), 1.0))

    book = engines.book()
    ray.get(book.release_idle.remote())
    groups = [placement_group([{"memory": 2**20}]) for _ in two_models]
    ray.get([g.ready() for g in groups])
    in_trial = [PlacementGroupSchedulingStrategy(g) for g in groups]
    try:
        (trial_a, host_a), (trial_b, host_b) = ray.get(
            [trial_stage.options(scheduling_strategy=s, memory=2**20).remote(m) for s, m in zip(in_trial, two_models)])
        assert trial_a != trial_b and ray.get(book.hosts_of.remote(trial_b)) == [host_b]
        handle_b = ray.get(book.acquire.remote(host_b, two_models[1].id, {}, trial_b))
        ray.get(book.release.remote(host_b, inf.engines_kept))
        stopped = ray.get(before_gpu_training.options(scheduling_strategy=in_trial[0], memory=2**20).remote())
        assert stopped == [host_a]
        assert ray.get(book.hosts_of.remote(trial_a)) == []
        assert ray.get(book.hosts_of.remote(trial_b)) == [host_b]
        assert len(ray.get(handle_b.__call__.remote(dict(batch)))["completion"]) == 1, "B's engine still decodes"
    finally:
        ray.get(book.release_idle.remote())
        for g in groups:
            remove_placement_group(g)


class Overlapping:
    """An asynchronous backend that records the most batches it held at once."""

    def __init__(self, path: str, torch_threads: int, dtype: str, **options):
        self.now = self.most = 0

    async def generate(self, batch):
        import asyncio

        self.now += 1
        self.most = max(self.most, self.now)
        await asyncio.sleep(2.0)
        self.now -= 1
        rows = len(batch["prompt"])
        return batch | {"completion": batch["prompt"], "most": np.full(rows, self.most),
                        "compute_seconds": np.zeros(rows)}


def test_a_host_decodes_several_batches_of_a_stage_at_once(ray_local, two_models):
    import ray

    from w2s_ray.runtime import engines
    from w2s_ray.runtime.inference import model_dataset

    weak, _ = two_models
    inf = InferenceSpec(batch_size=4, batches_in_flight=3, cpus_per_actor=0.5, engines_kept=0)
    df = pd.DataFrame({"prompt": [f"p{i}" for i in range(24)], "_row": range(24)})
    with model_dataset(ray.data.from_pandas(df), inf, Overlapping, weak.at("/"), "overlap", {}) as ds:
        out = ds.to_pandas().sort_values("_row")
    assert out["completion"].tolist() == df["prompt"].tolist()
    assert 2 <= out["most"].max() <= inf.batches_in_flight, out["most"].tolist()
    # The host's busy time shared among the batches in flight: the stage's sum is at most its wall.
    assert out["compute_seconds"].sum() < 24 / 4 * 2.0
    ray.get(engines.book().release_idle.remote())
