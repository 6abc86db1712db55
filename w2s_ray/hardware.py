"""The hardware figures of the dry run's cost model: assumed, or measured by the preflight.

`python -m w2s_ray.preflight` writes what it measured on the cluster's GPU nodes to
`<storage>/cluster/preflight.json`; the dry run of a sweep with the same storage reads it and
takes each figure measured there in place of its assumption. A figure is the slowest node's (a
gang or a grid waits for it). What no preflight can measure before training runs (the model
FLOP utilisation, vLLM's decoding rate) stays assumed, and the dry run says which is which.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from w2s_ray.artifacts import Store
from w2s_ray.models import speed

PREFLIGHT = ("cluster", "preflight.json")

#: name -> (assumed value, unit, what it is); the preflight's `figures` use the same names
ASSUMED: dict[str, tuple[float, str, str]] = {
    "tflops": (speed.PEAK_FLOPS["A100"] / 1e12, "TFLOP/s", "bf16 dense matmul peak per GPU (A100's datasheet)"),
    "load_gb_per_s": (2.0, "GB/s", "weight loads (the slower of the store's read and the node disk's)"),
    "disk_write_gb_per_s": (2.0, "GB/s", "checkpoint staging on a node's local disk"),
    "store_write_gb_per_s": (1.0, "GB/s", "a node's checkpoint upload to the store"),
}


@dataclass(frozen=True)
class Figures:
    values: dict[str, float] = field(default_factory=lambda: {k: v for k, (v, _, _) in ASSUMED.items()})
    measured: frozenset[str] = frozenset()
    source: str = ""  # where the measured figures came from, and when

    def __getitem__(self, name: str) -> float:
        return self.values[name]

    def describe(self) -> list[str]:
        """The dry run's lines: the figures taken from the preflight, then those assumed."""
        def show(names):
            return "; ".join(f"{ASSUMED[n][2]} {self.values[n]:.3g} {ASSUMED[n][1]}" for n in names)

        lines = []
        if self.measured:
            lines.append(f"from the preflight ({self.source}): {show(sorted(self.measured))}")
        assumed = [n for n in ASSUMED if n not in self.measured]
        if assumed:
            lines.append(f"assumed{'' if self.measured else ' (no preflight in this store)'}: {show(assumed)}")
        return lines


#: the assumptions alone
DEFAULT = Figures()


def figures(store: Store) -> Figures:
    """The store's preflight figures over the assumptions, or the assumptions alone."""
    path = store.path(*PREFLIGHT)
    if not store.exists(path):
        return DEFAULT
    record = store.read_json(path)
    found = {k: float(v) for k, v in record.get("figures", {}).items() if k in ASSUMED and v}
    return Figures({**DEFAULT.values, **found}, frozenset(found),
                   f"{store.uri(*PREFLIGHT)}, {record.get('measured_at', '?')}, "
                   f"{len(record.get('nodes', []))} node(s)")
