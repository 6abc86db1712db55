"""Pretrain the tiny ladder from its recipe and ship the rungs with the package.

    python -m w2s_ray.ladder.ship

Run it after changing the recipe (`recipe.py`): it pretrains every rung into a scratch cache,
never copying the package's own, replaces `w2s_ray/ladder/weights/` with them, and removes the
rungs of older recipes. A fresh clone then copies the rungs instead of pretraining them (about
4 minutes on 2 cores); tests/test_ladder.py pretrains them again and checks them bit for bit.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile

from w2s_ray.ladder import recipe

#: beside the shipped rungs: the platform they were pretrained on
BUILT_ON = "BUILT_ON.json"


def platform_id() -> str:
    """What decides a CPU run's bits: the architecture, torch's kernel level (AVX2, AVX-512:
    the order of a matmul's sums differs between them) and torch's release. Pretraining is
    bit-reproducible on one platform, not across them."""
    import torch

    return f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()} torch {torch.__version__}"


def built_on() -> str | None:
    found = recipe.PACKAGED / recipe.RECIPE.key() / BUILT_ON
    return json.loads(found.read_text())["platform"] if found.is_file() else None


def main() -> None:
    import ray

    from w2s_ray.ladder import tiny_ladder

    with tempfile.TemporaryDirectory(prefix="w2s-ship-") as scratch:
        os.environ["W2S_RAY_CACHE"] = scratch
        ray.init(include_dashboard=False, log_to_driver=False)
        built = tiny_ladder.build_ladder(packaged=False)
        ray.shutdown()
        shutil.rmtree(recipe.PACKAGED, ignore_errors=True)
        target = recipe.PACKAGED / recipe.RECIPE.key()
        for rung in recipe.RECIPE.rungs:
            shutil.copytree(built / recipe.rung_dirname(rung.name), target / recipe.rung_dirname(rung.name))
        (target / BUILT_ON).write_text(json.dumps({"platform": platform_id()}) + "\n")
    print(f"shipped {[r.name for r in recipe.RECIPE.rungs]} into {target}")


if __name__ == "__main__":
    main()
