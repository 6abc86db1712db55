"""Golden (key, output) pairs: an artifact whose output changes while its key stays the same
would be served stale from every store that already holds it. A run compares the outputs of
every committed artifact with those recorded for the same key; a differing output under an
unchanged key is a missing VERSION bump. When keys change on purpose, record them again:
`W2S_RAY_GOLDEN=update pytest <the test>`.

Keys are the same on every machine; outputs are bit-exact only on one platform: torch's CPU
kernels differ by instruction set (AVX2, AVX-512), so a trained weight differs in its last bits
from one to the other, and a greedy answer downstream may follow. Outputs are therefore recorded
per platform (`w2s_ray.ladder.ship.platform_id`), and compared where this platform has a record; elsewhere the keys
are checked and a warning says the outputs were not.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import pandas as pd
from safetensors.numpy import load

from w2s_ray.artifacts import Artifact, StageLog, Store
from w2s_ray.ladder.ship import platform_id

UPDATE = os.environ.get("W2S_RAY_GOLDEN") == "update"


def output_hash(store: Store, art: Artifact) -> str | None:
    """The content of an artifact's table or weights (not its files' bytes, which carry library
    versions and timestamps); None for an artifact with neither."""
    folder = store.location(art)
    digest = hashlib.sha256()
    if store.exists(f"{folder}/table.parquet"):
        df = store.read_table(f"{folder}/table.parquet")
        digest.update(",".join(df.columns).encode())
        digest.update(pd.util.hash_pandas_object(df.astype(str), index=False).to_numpy().tobytes())
    elif store.exists(f"{folder}/model.safetensors"):
        with store.fs.open_input_stream(f"{folder}/model.safetensors") as f:
            tensors = load(f.read())
        for name in sorted(tensors):
            digest.update(name.encode())
            digest.update(tensors[name].tobytes())
    else:
        return None
    return digest.hexdigest()[:16]


def outputs(store: Store, sweep: str) -> dict[str, dict[str, str]]:
    """`stage/key` -> {tag, output} of every artifact the sweep built."""
    log = StageLog(store, sweep, "").frame()
    built = log[log["status"] == "built"]
    out = {}
    for stage, key, tag in zip(built["stage"], built["key"], built["tag"].astype(str)):
        art = Artifact(stage, key)
        if store.committed(art) and (found := output_hash(store, art)) is not None:
            out[f"{stage}/{key}"] = {"tag": tag, "output": found}
    return out


def check(store: Store, sweep: str, golden: Path) -> None:
    now = outputs(store, sweep)
    here = platform_id()
    recorded = json.loads(golden.read_text()) if golden.exists() else {"keys": [], "outputs": {}}
    if UPDATE:
        kept = {p: o for p, o in recorded["outputs"].items() if set(o) == set(now)} if recorded["keys"] else {}
        kept[here] = {art: now[art]["output"] for art in sorted(now)}
        record = {"keys": {art: now[art]["tag"] for art in sorted(now)}, "outputs": kept}
        golden.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        return
    assert recorded["keys"], f"no golden outputs at {golden}: record them with W2S_RAY_GOLDEN=update"
    keys = recorded["keys"]
    new = sorted({art.split("/")[0] for art in now.keys() - keys.keys()})
    assert now.keys() == keys.keys(), (
        f"artifact keys changed (new keys of {new}, {len(keys.keys() - now.keys())} recorded ones "
        f"gone): if intended, record them again with W2S_RAY_GOLDEN=update")
    if here not in recorded["outputs"]:
        warnings.warn(f"{golden.name}: keys checked; no outputs recorded for platform {here!r} "
                      f"(recorded: {sorted(recorded['outputs'])}): W2S_RAY_GOLDEN=update adds them", stacklevel=2)
        return
    outs = recorded["outputs"][here]
    stale = [f"{art} ({now[art]['tag']}): bump VERSION of {art.split('/')[0]}"
             for art in sorted(now) if now[art]["output"] != outs[art]]
    assert not stale, "output changed under an unchanged key:\n  " + "\n  ".join(stale)
