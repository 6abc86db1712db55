"""Where node-bound work runs: on a GPU node, never on the head.

The cluster files declare a custom resource, GPU_NODE, on every GPU node type (and on no other),
so a task that asks for a sliver of it is placed on a GPU node, and when none is up the
autoscaler launches one for it, as it does for a GPU request. A Ray that the sweep or the
preflight starts on one machine declares it on its only node (`local_resources`): that machine
is where the stages run, whatever it has.
"""

from __future__ import annotations

import os
from typing import Any

GPU_NODE = "w2s_gpu_node"
#: each task's share: a hundred hub downloads or probes fit on a node at once
SHARE = 0.01


def on_gpu_node(**options: Any) -> dict[str, Any]:
    """Ray task options that place a task on a node carrying GPU_NODE, with `options` added."""
    resources = {**options.pop("resources", {}), GPU_NODE: SHARE}
    return {"num_cpus": 0, **options, "resources": resources}


def local_resources() -> dict[str, float]:
    """What a Ray started in this process declares beyond CPUs and GPUs; none when it joins a
    cluster (RAY_ADDRESS), whose nodes declare their own."""
    return {} if os.environ.get("RAY_ADDRESS") else {GPU_NODE: 1.0}
