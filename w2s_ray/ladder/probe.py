"""The knowledge probe: does a base checkpoint hold each capability's latent knowledge?

It asks held-out items in the *pretraining* form (no fine-tuning) and reads the greedy answer.
The ladder recipe is calibrated on it, and the ladder build records it per rung.
"""

from __future__ import annotations

import random

import numpy as np
import pandas as pd

from w2s_ray.capabilities import registry

PROBE_SEED = 123


def knowledge_probe(model_path: str, capabilities: tuple[str, ...], n: int = 100,
                    torch_threads: int = 1) -> dict[str, float]:
    from w2s_ray.runtime.backends import TransformersBackend

    backend = TransformersBackend(model_path, torch_threads, "float32")
    result = {}
    for name in capabilities:
        cap = registry.get(name)
        items = cap.probe(random.Random(f"{PROBE_SEED}:{name}"), n)
        out = backend({"prompt": np.array([e.prompt for e in items], dtype=object),
                       "max_new_tokens": np.full(len(items), cap.max_new_tokens)})
        result[name] = float(np.mean([cap.probe_answer(c) == e.gold
                                      for c, e in zip(out["completion"], items)]))
    result["average"] = float(pd.Series([result[c] for c in capabilities]).mean())
    return result
