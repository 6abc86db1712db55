"""Write an offline mirror of the loaded datasets, for clusters without internet access.

    python -m w2s_ray.data_mirror --out /shared/w2s-data                # every loaded dataset
    python -m w2s_ray.data_mirror --out /shared/w2s-data gsm8k sciq     # some of them

Run it where the hub is reachable; then `--data-dir /shared/w2s-data` (or `data_dir:` in a
preset) makes every loader read `<out>/<capability>/<upstream split>.parquet|jsonl` through the
same `load_dataset` instead of the hub. The files keep the upstream schema (and ClassLabel names).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from w2s_ray.capabilities import registry
from w2s_ray.capabilities.hub.base import HubCapability

log = logging.getLogger(__name__)


def loaded_names() -> list[str]:
    return [n for n in registry.names() if isinstance(registry.get(n), HubCapability)]


def write_mirror(cap: HubCapability, out: str, source_dir: str | None = None) -> list[Path]:
    """Load `cap` (from the hub, or from another mirror) and write its upstream splits under `out`."""
    written = []
    for split, ds in cap.load(source_dir).items():
        path = cap.mirror_files(out)[split]
        path.parent.mkdir(parents=True, exist_ok=True)
        if cap.mirror_format == "json":
            ds.to_json(str(path), lines=True)
        else:
            ds.to_parquet(str(path))
        log.info("%s: %s rows of %r -> %s", cap.name, len(ds), split, path)
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="mirror directory (created if missing)")
    p.add_argument("names", nargs="*", help=f"capabilities (default: all of {loaded_names()})")
    args = p.parse_args(argv)
    unknown = sorted(set(args.names) - set(loaded_names()))
    if unknown:
        print(f"error: not loaded datasets: {unknown}; allowed: {loaded_names()}", file=sys.stderr)
        return 2
    for name in args.names or loaded_names():
        write_mirror(registry.get(name), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
