"""The autoscaler configs, read the way Ray and the clouds read them, keep the properties
docs/cluster.md promises: Ray's own schema and bootstrap steps, boto3's RunInstances model, the
autoscaler's choice of node types, the IAM policy the head's autoscaler needs, and the node setup
commands run under bash with stand-ins for nvidia-smi, the image's Python and `ray`. All offline."""

import copy
import fnmatch
import inspect
import json
import os
import re
import shlex
import subprocess
import sys
from functools import partial
from pathlib import Path

import botocore.session
import pytest
import yaml
from botocore.validate import ParamValidator
from ray.autoscaler._private.aws import node_provider as aws_node_provider
from ray.autoscaler._private.aws.config import _configure_from_network_interfaces
from ray.autoscaler._private.command_runner import _with_interactive
from ray.autoscaler._private.node_provider_availability_tracker import NodeAvailabilitySummary
from ray.autoscaler._private.resource_demand_scheduler import (
    _default_utilization_scorer,
    get_nodes_for,
)
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
FILES = ["cluster.yaml", "cluster-gcp.yaml"]
VENV = "/opt/w2s-venv"  # where scripts/build_image.sh puts the nodes' environment
CODE = "/home/ubuntu/w2s-ray"  # where file_mounts syncs the repository
LOCAL = "/mnt/local"  # the node's local NVMe, mounted by the worker setup


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def gpu_types(raw: dict) -> dict:
    return {k: t for k, t in raw["available_node_types"].items() if t["resources"].get("GPU")}


def setup_commands(raw: dict, node_type: str) -> list[str]:
    """The commands Ray runs on a node of this type: setup_commands merged into head or worker
    setup (util.merge_setup_commands), a type's own worker_setup_commands replacing them."""
    cfg = prepare_config(copy.deepcopy(raw))
    if node_type == cfg["head_node_type"]:
        return cfg["head_setup_commands"]
    return cfg["available_node_types"][node_type].get("worker_setup_commands",
                                                        cfg["worker_setup_commands"])


def one_command(commands: list[str], marker: str) -> str:
    found = [c for c in commands if marker in c]
    assert len(found) == 1, f"one setup command with {marker!r}, found {len(found)}"
    return found[0]


def run_as_ray_does(command: str, tmp_path: Path, fakes: dict[str, str]) -> subprocess.CompletedProcess:
    """Runs `command` as Ray's SSH command runner has the node's login shell run it
    (_with_interactive), in a scratch home whose ~/.bashrc puts `fakes` (name -> shell script)
    first on PATH: a login shell's /etc/profile resets PATH, and on the nodes too it is the
    ~/.bashrc Ray sources first that activates the image's venv."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in fakes.items():
        (bin_dir / name).write_text("#!/bin/bash\n" + body + "\n")
        (bin_dir / name).chmod(0o755)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (home / ".bashrc").write_text(f"export PATH={shlex.quote(str(bin_dir))}:$PATH\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
    return subprocess.run(["bash", "-c", " ".join(_with_interactive(command))], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


# -- Ray's schema and the autoscaler's choices ---------------------------------------------------


@pytest.mark.parametrize("name", FILES)
def test_cluster_config_passes_rays_schema_and_scales_gpus_from_zero(name):
    raw = load(name)
    validate_config(prepare_config(raw))  # what `ray up` runs before touching the cloud

    head = raw["available_node_types"][raw["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0, "the head is a CPU node"
    gpu = gpu_types(raw)
    assert set(gpu) == {"a100_80g_spot", "a100_80g_ondemand"}, "spot, and on demand beside it"
    for t in gpu.values():
        assert t["resources"]["GPU"] == 8
        assert t["min_workers"] == 0 and 3 <= t["max_workers"] <= raw["max_workers"], \
            "from zero, and enough nodes of either type alone for the 72B plan's 20 GPUs"
    assert 0 < raw["idle_timeout_minutes"] <= 10
    start = " ".join(raw["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start, "the dashboard stays behind the SSH tunnel"
    # The pins reach the nodes through the image (the setup checks it was built from
    # pyproject.toml's), so a joining node installs nothing from a package index.
    for node_type in raw["available_node_types"]:
        setup = " ".join(setup_commands(raw, node_type))
        assert "pip install" not in setup and "pip3 install" not in setup
        assert "pyproject.toml" in setup and VENV in setup


def test_rays_validation_rejects_a_misspelt_field():
    raw = load("cluster.yaml")
    raw["available_node_types"]["a100_80g_spot"]["min_worker"] = 0
    with pytest.raises(Exception, match="min_worker"):
        validate_config(prepare_config(raw))


@pytest.mark.parametrize("name", FILES)
def test_the_autoscaler_takes_spot_first_and_can_place_the_72b_gang_on_demand_alone(name):
    """The 72B plan's gang (20 Ray Train workers of 1 GPU and 8 CPUs) as Ray's resource demand
    scheduler places it from these node types: on spot by default, and wholly on the on-demand
    type once spot is turned off (max_workers: 0), as docs/cluster.md says to do."""
    raw = prepare_config(load(name))
    gang = [{"GPU": 1, "CPU": 8}] * 20
    scorer = partial(_default_utilization_scorer,
                     node_availability_summary=NodeAvailabilitySummary(node_availabilities={}))

    def place(node_types):
        added, left = get_nodes_for(node_types, {}, raw["head_node_type"], raw["max_workers"],
                                    gang, scorer)
        assert not left, f"{name}: the gang does not fit: {left}"
        return dict(added)

    assert place(raw["available_node_types"]) == {"a100_80g_spot": 3}
    no_spot = copy.deepcopy(raw["available_node_types"])
    no_spot["a100_80g_spot"]["max_workers"] = 0
    assert place(no_spot) == {"a100_80g_ondemand": 3}


# -- AWS: what boto3 sends, EFA, one zone, placement, disks --------------------------------------


def run_instances_requests(raw: dict) -> dict[str, dict]:
    """Per node type, the keyword arguments Ray's AWS provider passes to ec2.create_instances
    (RunInstances): node_config after Ray's bootstrap step for network interfaces, through
    AWSNodeProvider._create_node with the EC2 call captured instead of made."""
    boot = _configure_from_network_interfaces(copy.deepcopy(raw))
    provider = aws_node_provider.AWSNodeProvider(raw["provider"], raw["cluster_name"])
    requests = {}

    class Capture:
        def create_instances(self, **kwargs):
            requests[node_type] = kwargs
            return []

    provider.ec2_fail_fast = Capture()
    for node_type, t in boot["available_node_types"].items():
        node_config = copy.deepcopy(t["node_config"])
        node_config.setdefault("SubnetIds", ["subnet-from-bootstrap"])  # _configure_subnet's
        node_config.setdefault("KeyName", "ray-autoscaler_key")  # _configure_key_pair's
        provider._create_node(node_config, {"ray-user-node-type": node_type}, 1)
    return requests


def test_aws_node_configs_are_requests_boto3_accepts():
    """boto3 validates RunInstances' parameters against EC2's API model before sending: a
    misspelt or mistyped key in a node_config (Ray's schema leaves node_config open) fails here
    as it would in the head's autoscaler."""
    raw = load("cluster.yaml")
    shape = botocore.session.get_session().get_service_model("ec2") \
        .operation_model("RunInstances").input_shape
    requests = run_instances_requests(raw)
    assert set(requests) == set(raw["available_node_types"])
    for node_type, kwargs in requests.items():
        report = ParamValidator().validate(kwargs, shape)
        assert not report.has_errors(), f"{node_type}: {report.generate_report()}"


def test_aws_gpu_nodes_have_every_efa_interface_one_subnet_and_a_cluster_placement_group():
    raw = load("cluster.yaml")
    assert "," not in raw["provider"]["availability_zone"], "one zone"
    requests = run_instances_requests(raw)
    subnets, groups = set(), set()
    for node_type in gpu_types(raw):
        req = requests[node_type]
        assert req["InstanceType"] == "p4de.24xlarge"
        nics = req["NetworkInterfaces"]
        # A p4de has 4 network cards, one EFA each; the primary is card 0, device 0.
        assert sorted(n["NetworkCardIndex"] for n in nics) == [0, 1, 2, 3], node_type
        assert all(n["InterfaceType"] == "efa" for n in nics), node_type
        assert [n["DeviceIndex"] for n in nics if n["NetworkCardIndex"] == 0] == [0]
        assert all(n["DeviceIndex"] == 1 for n in nics if n["NetworkCardIndex"] != 0)
        assert "SubnetId" not in req and "SecurityGroupIds" not in req, \
            "with NetworkInterfaces, the subnet and groups go in each interface only"
        subnets |= {n["SubnetId"] for n in nics}
        groups |= {g for n in nics for g in n["Groups"]}
    assert len(subnets) == 1, f"the GPU nodes in one subnet (one zone): {subnets}"
    placement = {requests[t]["Placement"]["GroupName"] for t in gpu_types(raw)}
    assert len(placement) == 1, "spot and on-demand nodes of a gang in one placement group"
    head = requests[raw["head_node_type"]]
    assert set(head["SecurityGroupIds"]) <= groups, \
        "the head in the GPU nodes' security group, which lets the group reach itself"
    assert "MarketType" not in json.dumps(requests["a100_80g_ondemand"])
    assert requests["a100_80g_spot"]["InstanceMarketOptions"]["MarketType"] == "spot"
    docs = (ROOT / "docs/cluster.md").read_text()
    assert f"--group-name {placement.pop()} --strategy cluster" in docs, \
        "docs/cluster.md creates the placement group the node types name"


def test_aws_root_volumes_are_gp3_with_their_throughput_set():
    raw = load("cluster.yaml")
    for node_type, kwargs in run_instances_requests(raw).items():
        (root,) = kwargs["BlockDeviceMappings"]
        ebs = root["Ebs"]
        assert ebs["VolumeType"] == "gp3" and ebs["DeleteOnTermination"] is True, node_type
        assert 125 <= ebs["Throughput"] <= ebs["Iops"] / 4, \
            f"{node_type}: gp3 allows 0.25 MiB/s per provisioned IOPS"
        if node_type in gpu_types(raw):
            assert ebs["Throughput"] >= 500, "the GPU nodes read the image's venv from the root"


# -- AWS: the head's permissions -----------------------------------------------------------------


def allowed(policy: dict, action: str, resource: str, context: dict[str, str]) -> bool:
    """IAM's evaluation for one request, for the policy features these documents use: Allow and
    Deny statements, wildcards in Action and Resource, StringEquals/StringLike conditions."""
    def listed(v):
        return v if isinstance(v, list) else [v]

    def matches(stmt):
        assert not {"NotAction", "NotResource", "NotPrincipal"} & set(stmt), "not modelled here"
        if not any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in listed(stmt["Action"])):
            return False
        if not any(fnmatch.fnmatchcase(resource, r) for r in listed(stmt["Resource"])):
            return False
        for op, pairs in stmt.get("Condition", {}).items():
            assert op in ("StringEquals", "StringLike"), f"condition {op} not modelled here"
            for key, wanted in pairs.items():
                have = context.get(key)
                if have is None or not any(
                        have == w if op == "StringEquals" else fnmatch.fnmatchcase(have, w)
                        for w in listed(wanted)):
                    return False
        return True

    statements = policy["Statement"]
    if any(matches(s) for s in statements if s["Effect"] == "Deny"):
        return False
    return any(matches(s) for s in statements if s["Effect"] == "Allow")


def policy(name: str, bucket: str) -> dict:
    """The policy document as docs/cluster.md has it applied: YOUR_BUCKET replaced."""
    return json.loads((ROOT / "docs" / name).read_text().replace("YOUR_BUCKET", bucket))


def autoscaler_ec2_actions(raw: dict) -> set[str]:
    """The EC2 actions Ray's AWS node provider calls, read from its source: boto3 client calls
    plus the resource-API calls that stand for RunInstances, DescribeInstances and
    TerminateInstances; start/stop only with cache_stopped_nodes, DescribeImages only with
    the CloudWatch agent."""
    src = Path(inspect.getsourcefile(aws_node_provider)).read_text()
    calls = set(re.findall(r"\.meta\.client\.(\w+)\(", src))
    calls |= {"run_instances"} if ".create_instances(" in src else set()
    calls |= {"describe_instances"} if ".instances.filter(" in src else set()
    calls |= {"terminate_instances"} if re.search(r"\bnode\.terminate\(\)", src) else set()
    if not raw["provider"].get("cache_stopped_nodes", True):
        calls -= {"start_instances", "stop_instances"}
    if "cloudwatch" not in raw["provider"]:
        calls -= {"describe_images"}
    return {"ec2:" + "".join(w.title() for w in c.split("_")) for c in calls}


def test_the_heads_policy_covers_every_call_its_autoscaler_makes():
    """The head names its instance profile, so Ray attaches no role of its own
    (aws/config.py _configure_iam_role returns at once); the profile's policy must then allow
    what the autoscaler on the head calls, for this cluster's nodes, and the bucket."""
    raw = load("cluster.yaml")
    head_profile = raw["available_node_types"]["head"]["node_config"]["IamInstanceProfile"]["Name"]
    assert "docs/aws-head-policy.json" in (ROOT / "cluster.yaml").read_text()
    head = policy("aws-head-policy.json", "store-bucket")
    actions = autoscaler_ec2_actions(raw)
    assert {"ec2:RunInstances", "ec2:TerminateInstances", "ec2:CreateTags",
            "ec2:DescribeInstances"} <= actions, f"read from Ray's provider: {actions}"

    instance = "arn:aws:ec2:us-west-2:123456789012:instance/i-0123456789abcdef0"
    ours = {"ec2:ResourceTag/ray-cluster-name": raw["cluster_name"]}
    for action in sorted(actions):
        if action == "ec2:RunInstances" or action.startswith("ec2:Describe"):
            assert allowed(head, action, "*", {}), action
        else:  # acts on the cluster's own instances, which Ray tags at launch
            assert allowed(head, action, instance, ours), action
    assert allowed(head, "ec2:CreateTags", instance, {"ec2:CreateAction": "RunInstances"}), \
        "RunInstances with TagSpecifications needs CreateTags on the new instance"
    other = {"ec2:ResourceTag/ray-cluster-name": "someone-else"}
    assert not allowed(head, "ec2:TerminateInstances", instance, other), \
        "the head terminates its own cluster's instances only"

    for t in gpu_types(raw).values():
        role = t["node_config"]["IamInstanceProfile"]["Name"]  # profile and role share a name
        assert role != head_profile
        assert allowed(head, "iam:PassRole", f"arn:aws:iam::123456789012:role/{role}",
                       {"iam:PassedToService": "ec2.amazonaws.com"}), role
    assert not allowed(head, "iam:PassRole", f"arn:aws:iam::123456789012:role/{head_profile}",
                       {"iam:PassedToService": "ec2.amazonaws.com"}), "only the workers' role"

    for action, resource in [("s3:ListBucket", "arn:aws:s3:::store-bucket"),
                             ("s3:GetObject", "arn:aws:s3:::store-bucket/w2s/artifacts/a/b"),
                             ("s3:PutObject", "arn:aws:s3:::store-bucket/w2s/artifacts/a/b"),
                             ("s3:DeleteObject", "arn:aws:s3:::store-bucket/w2s/sweeps/x"),
                             ("s3:AbortMultipartUpload", "arn:aws:s3:::store-bucket/w2s/x")]:
        assert allowed(head, action, resource, {}), action
        assert not allowed(head, action, resource.replace("store-bucket", "other-bucket"), {})


def test_the_workers_policy_grants_the_bucket_and_nothing_of_ec2_or_iam():
    worker = policy("aws-worker-policy.json", "store-bucket")
    head = policy("aws-head-policy.json", "store-bucket")
    s3 = [s for s in head["Statement"] if s["Sid"].startswith("Store")]
    assert worker["Statement"] == s3, "the same bucket statements as the head's"
    assert allowed(worker, "s3:PutObject", "arn:aws:s3:::store-bucket/w2s/x", {})
    for action in ["ec2:RunInstances", "ec2:TerminateInstances", "iam:PassRole"]:
        assert not allowed(worker, action, "*", {}), action


# -- GCP: the request body Ray sends to instances.insert -----------------------------------------


SCHEDULING_FIELDS = {  # compute.v1 Instance.scheduling, the fields these files may use
    "provisioningModel", "onHostMaintenance", "automaticRestart", "instanceTerminationAction",
    "preemptible", "nodeAffinities", "minNodeCpus", "maxRunDuration", "terminationTime",
    "localSsdRecoveryTimeout", "availabilityDomain"}


def test_gcp_node_configs_are_bodies_the_compute_api_accepts():
    raw = load("cluster-gcp.yaml")
    p = raw["provider"]
    zone, region, project = p["availability_zone"], p["region"], p["project_id"]
    assert zone.startswith(region + "-") and "," not in zone
    for node_type, t in raw["available_node_types"].items():
        body = t["node_config"]
        sched = body.get("scheduling", {})
        assert isinstance(sched, dict), f"{node_type}: scheduling is one object in the API"
        assert set(sched) <= SCHEDULING_FIELDS, f"{node_type}: {set(sched) - SCHEDULING_FIELDS}"
        (boot,) = [d for d in body["disks"] if d.get("boot")]
        params = boot["initializeParams"]
        assert re.fullmatch(rf"zones/{zone}/diskTypes/pd-(ssd|balanced)", params["diskType"]), \
            f"{node_type}: an SSD boot disk in the provider's zone, not the API's pd-standard"
        assert params["sourceImage"] == f"projects/{project}/global/images/family/w2s-ray", \
            f"{node_type}: the image scripts/build_image.sh makes in the project"
    head = raw["available_node_types"][raw["head_node_type"]]["node_config"]
    assert "serviceAccounts" not in head, \
        "a head serviceAccounts replaces the account Ray's bootstrap gives the head"
    for node_type, t in gpu_types(raw).items():
        body = t["node_config"]
        assert body["scheduling"]["onHostMaintenance"] == "TERMINATE", "A100s do not migrate"
        (policy_url,) = body["resourcePolicies"]
        assert policy_url == f"projects/{project}/regions/{region}/resourcePolicies/w2s-ray-compact"
        (account,) = body["serviceAccounts"]
        assert account["email"].endswith(f"@{project}.iam.gserviceaccount.com")
    spot = raw["available_node_types"]["a100_80g_spot"]["node_config"]["scheduling"]
    assert spot["provisioningModel"] == "SPOT" and spot["instanceTerminationAction"] == "DELETE"
    on_demand = raw["available_node_types"]["a100_80g_ondemand"]["node_config"]["scheduling"]
    assert on_demand["provisioningModel"] == "STANDARD"
    docs = (ROOT / "docs/cluster.md").read_text()
    assert "resource-policies create group-placement w2s-ray-compact" in docs


# -- Images and node setup, run under bash -------------------------------------------------------


def image_references(name: str) -> list[str]:
    raw = load(name)
    return [str(t["node_config"].get("ImageId") or d["initializeParams"]["sourceImage"])
            for t in raw["available_node_types"].values()
            for d in (t["node_config"].get("disks") or [{"initializeParams": {}}])]


@pytest.mark.parametrize("name", FILES)
def test_no_node_boots_an_image_with_python_below_3_11(name):
    """Every node boots the image scripts/build_image.sh makes (its build refuses a base image
    with Python < 3.11 or a driver < 580: the next test), never a stock 22.04 / Python 3.10 one."""
    stock = re.compile(r"2204|22\.04|py3(8|9|10)\b|nvidia-5[0-7]\d|cu12", re.IGNORECASE)
    for ref in image_references(name):
        assert not stock.search(ref), ref
    raw = load(name)
    if raw["provider"]["type"] == "aws":
        assert len({t["node_config"]["ImageId"] for t in raw["available_node_types"].values()}) == 1


@pytest.mark.parametrize("driver, python, reason", [
    ("570.172.08", "3.12", "R580"), ("580.95.05", "3.10", ">= 3.11"), ("", "3.12", "no NVIDIA")])
def test_the_image_build_refuses_an_old_driver_or_python(tmp_path, driver, python, reason):
    payload = subprocess.run(["bash", str(ROOT / "scripts/build_image.sh"), "payload"],
                             capture_output=True, text=True, check=True).stdout
    assert not re.search(r"poweroff|shutdown|reboot", payload), "the caller stops the builder"
    fakes = {"modinfo": f"[ -n '{driver}' ] && echo '{driver}'" if driver else "exit 1",
             "python3": f"echo {python}", "sync": "true",
             "apt-get": "echo apt-get must not run; exit 3"}
    result = run_as_ray_does(payload, tmp_path, fakes)
    assert result.returncode != 0
    assert "W2S_IMAGE_FAILED" in result.stdout and reason in result.stdout, result.stdout
    assert "apt-get must not run" not in result.stdout, "the checks come before any install"


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("driver, ok", [("570.172.08", False), ("575.51.03", False),
                                        ("580.65.06", True), ("590.10", True), (None, False)])
def test_gpu_setup_fails_fast_on_a_driver_older_than_r580(tmp_path, name, driver, ok):
    raw = load(name)
    for node_type in gpu_types(raw):
        check = one_command(setup_commands(raw, node_type), "nvidia-smi")
        smi = f"echo {driver}" if driver else "echo 'NVIDIA-SMI has failed' >&2; exit 9"
        result = run_as_ray_does(check, tmp_path, {"nvidia-smi": smi})
        assert (result.returncode == 0) == ok, (node_type, driver, result.stderr)
        if not ok:
            assert "R580" in result.stderr or "no NVIDIA driver" in result.stderr, result.stderr
    head = " ".join(setup_commands(raw, raw["head_node_type"]))
    assert "nvidia-smi" not in head, "the head has no GPU"


def fake_venv(tmp_path: Path, python: str) -> Path:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    (venv / "bin/python").write_text(f"#!/bin/bash\n{python}\n")
    (venv / "bin/python").chmod(0o755)
    return venv


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("version, ok", [("3.10", False), ("3.9", False), ("3.11", True),
                                         ("3.12", True), (None, False)])
def test_every_node_fails_fast_on_python_below_3_11_or_no_baked_venv(tmp_path, name, version, ok):
    raw = load(name)
    for node_type in raw["available_node_types"]:
        check = one_command(setup_commands(raw, node_type), "version_info")
        assert VENV in check
        venv = fake_venv(tmp_path, f"echo {version}") if version else tmp_path / "no-venv"
        result = run_as_ray_does(check.replace(VENV, str(venv)), tmp_path, {})
        assert (result.returncode == 0) == ok, (node_type, version, result.stderr)
        if not ok:
            assert ("3.11" in result.stderr) if version else ("build_image.sh" in result.stderr)


@pytest.mark.parametrize("name", FILES)
def test_setup_refuses_an_image_built_from_other_pins(tmp_path, name):
    """The image records the pyproject.toml it was built from; a node whose synced code pins
    other packages stops in setup instead of running them against the wrong torch or vLLM."""
    raw = load(name)
    check = one_command(setup_commands(raw, raw["head_node_type"]), "tomllib")
    venv = tmp_path / "venv"
    venv.mkdir()
    code = tmp_path / "code"
    code.mkdir()
    pyproject = (ROOT / "pyproject.toml").read_text()
    (venv / "w2s-pyproject.toml").write_text(pyproject)
    real_python = f'exec {shlex.quote(os.path.realpath(sys.executable))} "$@"'
    (venv / "bin").mkdir()
    (venv / "bin/python").write_text(f"#!/bin/bash\n{real_python}\n")
    (venv / "bin/python").chmod(0o755)
    command = check.replace(VENV, str(venv)).replace(CODE, str(code))

    (code / "pyproject.toml").write_text(pyproject.replace("# the sweep's progress", "# edited"))
    assert run_as_ray_does(command, tmp_path, {}).returncode == 0, "comments and tools don't count"
    assert "torch==2.13.0" in pyproject
    (code / "pyproject.toml").write_text(pyproject.replace("torch==2.13.0", "torch==2.12.0"))
    result = run_as_ray_does(command, tmp_path, {})
    assert result.returncode != 0 and "rebuild it (scripts/build_image.sh)" in result.stderr


def start_environment(raw: dict, tmp_path: Path) -> tuple[dict[str, str], list[str]]:
    """The environment and arguments `ray start` gets from the worker start commands, run as
    Ray runs them with a stand-in `ray` that records both."""
    record = tmp_path / "ray-start.json"
    fake_ray = (f'[ "$1" = start ] || exit 0\n'
                f'python3 -c \'import json, os, sys; json.dump({{"env": dict(os.environ), '
                f'"args": sys.argv[1:]}}, open("{record}", "w"))\' "$@"')
    for command in raw["worker_start_ray_commands"]:
        result = run_as_ray_does(command.replace("$RAY_HEAD_IP", "10.0.0.1"), tmp_path,
                                 {"ray": fake_ray})
        assert result.returncode == 0, result.stderr
    seen = json.loads(record.read_text())
    return seen["env"], seen["args"]


@pytest.mark.parametrize("name", FILES)
def test_gpu_nodes_mount_their_nvme_and_ray_workers_inherit_the_cache_tmpdir_and_nccl(tmp_path,
                                                                                      name):
    raw = load(name)
    for node_type in gpu_types(raw):
        commands = setup_commands(raw, node_type)
        mount = one_command(commands, "mdadm")
        assert re.search(r"mdadm --create \S+ .*--level=0", mount), "one RAID0 of all local disks"
        for needed in [f"L={LOCAL}", "mkfs.ext4", "mount -o noatime", "mount --bind",
                       "nvme-Amazon_EC2_NVMe_Instance_Storage_", "google-local-nvme-ssd-",
                       "$L/tmp", "$L/cache", "$L/ray", "$L/spill"]:
            assert needed in mount, needed
        assert commands.index(mount) > commands.index(one_command(commands, "nvidia-smi")), \
            "the driver check first: it fails in a second, the RAID takes longer"
    twins = [one_command(setup_commands(load(f), "a100_80g_spot"), "mdadm") for f in FILES]
    assert twins[0] == twins[1], "one text for both clouds, so a fix reaches both"

    env, args = start_environment(raw, tmp_path)
    assert env["W2S_RAY_CACHE"] == f"{LOCAL}/cache" and env["TMPDIR"] == f"{LOCAL}/tmp"
    assert env["HF_HOME"].startswith(LOCAL + "/")
    assert f"--temp-dir={LOCAL}/ray" in args and f"--object-spilling-directory={LOCAL}/spill" in args
    assert "--address=10.0.0.1:6379" in args
    if raw["provider"]["type"] == "aws":
        assert env["FI_PROVIDER"] == "efa" and env["FI_EFA_USE_DEVICE_RDMA"] == "1"
        assert env["NCCL_NET_PLUGIN"] == "ofi"
        assert "/opt/amazon/ofi-nccl/lib" in env["LD_LIBRARY_PATH"].split(":")
        efa = one_command(setup_commands(raw, "a100_80g_spot"), "/sys/class/infiniband")
        assert "-ge 4" in efa and "libnccl-net-ofi.so" in efa


@pytest.mark.parametrize("name", FILES)
def test_the_nvme_setup_stops_without_local_disks_and_reuses_its_mount(tmp_path, name):
    """The two paths of the disk setup that run without root: a node without local NVMe stops
    with the reason; a node set up before (`ray up` again) only makes its folders."""
    mount = one_command(setup_commands(load(name), "a100_80g_spot"), "mdadm")
    log = tmp_path / "sudo.log"
    sudo = f'echo "$*" >> {log}'
    globs = re.findall(r"/dev/disk/by-id/\S+\*", mount)
    assert len(globs) == 2
    if not any(next(Path("/").glob(g.lstrip("/")), None) for g in globs):  # none on this machine
        result = run_as_ray_does(mount, tmp_path, {"mountpoint": "exit 1", "sudo": sudo})
        assert result.returncode != 0 and "no local NVMe disk" in result.stderr, result.stderr
        assert not log.exists(), "nothing is created or mounted"
    result = run_as_ray_does(mount, tmp_path, {"mountpoint": "exit 0", "sudo": sudo})
    assert result.returncode == 0, result.stderr
    made = log.read_text().splitlines()
    assert made[0] == f"install -d -m 1777 {LOCAL}/tmp", made
    assert made[1].startswith("install -d -o ") and made[1].endswith(
        f"{LOCAL}/cache {LOCAL}/hf {LOCAL}/ray {LOCAL}/spill"), made
    assert len(made) == 2, "no mdadm, mkfs or mount on a node whose disks are mounted"


@pytest.mark.parametrize("name", FILES)
def test_every_command_parses_as_the_nodes_login_shell_gets_it(name):
    raw = prepare_config(load(name))
    commands = (raw["head_setup_commands"] + raw["worker_setup_commands"]
                + raw["head_start_ray_commands"] + raw["worker_start_ray_commands"])
    for command in commands:
        # The string the node's login shell gets after SSH's shell has unquoted Ray's argument.
        (received,) = shlex.split(_with_interactive(command)[-1])
        result = subprocess.run(["bash", "-n", "-c", received], capture_output=True, text=True,
                                check=False)
        assert result.returncode == 0, f"{command!r}: {result.stderr}"


@pytest.mark.parametrize("name", FILES)
def test_cluster_files_point_at_docs_cluster_md_not_the_readme(name):
    text = (ROOT / name).read_text()
    assert "docs/cluster.md" in text and "README" not in text
