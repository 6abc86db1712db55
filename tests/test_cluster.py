"""The autoscaler configs parse and pass Ray's own schema validation (offline: jsonschema and the
ray-schema.json shipped in the ray package), and keep the properties docs/cluster.md promises."""

from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-gcp.yaml"])
def test_cluster_config_passes_rays_schema_and_scales_gpus_from_zero(name):
    raw = yaml.safe_load((ROOT / name).read_text())
    validate_config(prepare_config(raw))  # what `ray up` runs before touching the cloud

    head = raw["available_node_types"][raw["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0, "the head is a CPU node"
    gpu = [t for t in raw["available_node_types"].values() if t["resources"].get("GPU")]
    assert len(gpu) == 1 and gpu[0]["resources"]["GPU"] == 8
    assert gpu[0]["min_workers"] == 0 and 3 <= gpu[0]["max_workers"] <= raw["max_workers"], \
        "from zero, and enough nodes for the 72B plan's 20 GPUs"
    assert 0 < raw["idle_timeout_minutes"] <= 10
    start = " ".join(raw["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start, "the dashboard stays behind the SSH tunnel"
    setup = " ".join(raw["setup_commands"])
    assert "w2s-ray[vllm]" in setup and "==" not in setup, "the project and its vLLM extra, its own pins"


def test_rays_validation_rejects_a_misspelt_field():
    raw = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    raw["available_node_types"]["a100_80g"]["min_worker"] = 0
    with pytest.raises(Exception, match="min_worker"):
        validate_config(prepare_config(raw))
