"""Typed sweep configuration: YAML presets shipped in the package, overridable from the CLI.

Every model is strict (`extra="forbid"`), so a misspelt field fails at load time, before Ray
starts, with a message that names the field and what is allowed there.
"""

from __future__ import annotations

import itertools
import typing
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RungSpec(Strict):
    """One rung of a ladder: a hub id / local path, or a rung of the self-built tiny ladder."""

    name: str = Field(description="the rung's name in `pairs`, tables and artifact tags")
    model: str = Field(description="hub id, local path, or 'tiny:<rung>' for the built ladder")
    revision: str | None = Field(
        None, description="hub commit of a hub id; unset = what `main` points at when the sweep "
                          "starts, pinned then and saved with the run")


class LadderSpec(Strict):
    rungs: list[RungSpec] = Field(min_length=2, description="the models, smallest first")

    def names(self) -> list[str]:
        return [r.name for r in self.rungs]

    def rung(self, name: str) -> RungSpec:
        for r in self.rungs:
            if r.name == name:
                return r
        raise KeyError(f"ladder has no rung {name!r}; allowed: {self.names()}")


class SplitSizes(Strict):
    """Per-capability sizes of D^a (labeled), D^b (weak-labeled) and the test split."""

    labeled: int = Field(gt=0, description="D^a: gold-labeled items the weak model trains on")
    unlabeled: int = Field(gt=0, description="D^b: items the weak model labels for the strong one")
    test: int = Field(gt=0, description="test items every method is scored on")


class TrainHParams(Strict):
    """Paper defaults (Sec. 5.1): 2 epochs, batch 40, Adam(W) lr 1e-5, wd 0.01, cosine."""

    epochs: float = Field(2.0, gt=0, description="passes over the training table")
    batch_size: int = Field(40, gt=0, description="global batch: rows per optimizer step")
    lr: float = Field(1e-5, gt=0, description="AdamW peak learning rate")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    schedule: Literal["cosine", "linear", "constant"] = Field(
        "cosine", description="learning-rate decay after the warm-up")
    warmup_fraction: float = Field(0.0, ge=0, lt=1, description="share of the steps spent warming up")
    grad_clip: float | None = Field(1.0, gt=0, description="largest gradient norm of a step (clipped "
                                                        "to it); null = no clipping")
    max_length: int = Field(256, gt=8, description="prompt + answer tokens, fixed batch shape")
    toward_base: float = Field(
        0.0, ge=0, lt=1, description="after training, move every weight this share of the way "
                                     "back to the base model's (weight averaging, as WiSE-FT; a "
                                     "host-memory copy of the base is kept meanwhile); 0 = off; "
                                     "supervised training only, never the reward model")
    num_workers: int = Field(
        0, ge=0, description="Ray Train workers; 0 = Ray Train local mode in the trial process"
    )
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs Ray reserves per training worker")
    use_gpu: bool = Field(False, description="one GPU per training worker")
    torch_threads: int = Field(1, ge=1, description="torch intra-op threads per training process")
    # Layout and recovery (w2s_ray/models/resources.py sets them per size when `plan: true`).
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp", description="ddp: replicated model; fsdp: FSDP2 full shard of weights, grads, Adam")
    grad_accum: int = Field(1, ge=1, description="micro-batches per step; the global batch stays batch_size")
    activation_checkpointing: bool = Field(
        False, description="recompute each decoder layer's activations in the backward pass")
    mixed_precision: Literal["no", "bf16"] = Field("no", description="bf16 compute, fp32 master weights")
    checkpoint_every: int = Field(
        0, ge=0, description="steps between resumable Ray Train checkpoints; 0 = once per epoch "
                             "(stages of checkpoint_min_steps steps or more; local mode never checkpoints)")
    checkpoint_min_steps: int = Field(
        200, ge=0, description="a stage of fewer steps writes no resumable checkpoint: a run "
                               "resumed after a failure restarts it from its first step (a full "
                               "checkpoint, weights and AdamW in fp32, costs 12 bytes a parameter)")
    checkpoint_to: Literal["local", "store"] = Field(
        "local", description="local: each rank writes its checkpoint shards to the node's disk, then "
                             "Ray Train uploads them; store: each rank streams them straight to the "
                             "store (no node disk needed, the step waits for the store's writes)")
    plan: bool = Field(False, description="take workers, strategy, accumulation, checkpointing and "
                                          "precision from the resource plan of each rung's architecture")

    @model_validator(mode="after")
    def _averaging_layout(self) -> TrainHParams:
        if self.toward_base and self.strategy == "fsdp":
            raise ValueError("toward_base: weight averaging keeps a full copy of the base's weights "
                             "and supports strategy 'ddp' only; allowed with fsdp: 0")
        return self


class InferenceSpec(Strict):
    """Generation through Ray Data: which backend, and the resource plan it runs with."""

    backend: Literal["auto", "vllm", "transformers"] = Field(
        "auto", description="auto: vLLM on GPU nodes; on CPU the faster end to end for the stage "
                            "(w2s_ray/runtime/choose.py)")
    batch_size: int = Field(64, gt=0, description="rows per Ray Data batch")
    engines_per_model: int = Field(1, ge=1, description="engines (or warm-worker tasks) that decode one "
                                                        "model's stage side by side")
    engines_kept: int = Field(2, ge=0, description="idle engine hosts kept between stages (vLLM, GPUs), "
                                                   "least recently used stopped first; training on GPUs "
                                                   "stops its own trial's idle ones, and others' only "
                                                   "while free GPUs fall short")
    concurrency: int = Field(256, ge=1, description="sequences one vLLM engine decodes at once "
                                                    "(max_num_seqs)")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per vLLM engine")
    batches_in_flight: int = Field(4, ge=1, description="Ray Data batches one engine host decodes at once "
                                   "(vLLM: continuously batched by its asynchronous engine, so no batch's "
                                   "longest answers leave it idle); 1: one synchronous LLM.generate per batch")
    enforce_eager: bool | None = Field(None, description="vLLM without torch.compile and CUDA graphs; null: "
                                       "eager on CPU (compiling costs more than it saves there), compiled on "
                                       "GPUs, with the compile cache kept per node")
    cpus_per_actor: float = Field(0.5, gt=0, description="CPUs Ray reserves per inference actor")
    gpus_per_actor: float = Field(0.0, ge=0, description="GPUs Ray reserves per inference actor")
    torch_threads: int = Field(1, ge=1, description="torch intra-op threads per inference process")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="weights and compute dtype of the inference backend")
    plan: bool = Field(False, description="take tensor_parallel_size, gpus_per_actor and "
                                          "concurrency from the resource plan of each rung's architecture")

    @model_validator(mode="after")
    def _engine_gpus(self) -> InferenceSpec:
        # A vLLM engine's tensor-parallel workers see only the GPUs Ray gave its actor.
        if self.tensor_parallel_size > 1 and self.gpus_per_actor < self.tensor_parallel_size:
            raise ValueError(f"gpus_per_actor must be >= tensor_parallel_size "
                             f"({self.tensor_parallel_size}), got {self.gpus_per_actor}")
        return self


class SweepSpec(Strict):
    max_concurrent_trials: int = Field(2, ge=1, description="(pair, seed) trials run at once")
    # A trial only waits on its stages, which reserve their own CPUs. Any CPU share it held
    # (even 0.01) left two trials 1.98 CPUs on 2 cores, so their two 1-CPU training stages
    # never ran side by side: the tiny sweep trained one model at a time.
    trial_cpus: float = Field(0.0, ge=0, description="CPUs each (pair, seed) trial's recipe driver reserves")
    trial_memory_gb: float = Field(0.5, gt=0, description="memory each trial's recipe driver reserves "
                                   "(its placement group needs one non-zero resource)")
    allow_over_memory: bool = Field(False, description="start GPU stages whose estimated peak per GPU "
                                    "exceeds 90% of it (the dry run lists them); off, the sweep refuses "
                                    "to start")
    measured_throughput: str | None = Field(
        None, description="a previous run's results/throughput.csv (path or URI): the dry run's GPU-hours "
                          "then use its measured tokens per device-second and tokens per row for the "
                          "stage kinds and model sizes it has, instead of the assumed ones")


class TrackingSpec(Strict):
    """Where each trial's metrics and the final tables go besides the store (off by default)."""

    mlflow: str | None = Field(None, description="MLflow tracking URI, or a local folder for a file "
                                                 "store; null = off (needs the mlflow extra)")
    mlflow_experiment: str | None = Field(None, description="MLflow experiment; default: the sweep's name")
    wandb: Literal["off", "offline", "online"] = Field(
        "off", description="Weights & Biases: offline writes runs under the results folder without a "
                           "network (`wandb sync` uploads them later); needs the wandb extra")
    wandb_project: str | None = Field(None, description="W&B project; default: the sweep's name")


class RewardSpec(Strict):
    """The reward model that selects weak samples (paper Sec. 4.2-4.3)."""

    threshold: float = Field(0.5, gt=0, lt=1, description="keep a weak sample when p(good) > threshold")
    cross_fit: int = Field(0, ge=0, description="0 = paper (one model scores its own training "
                           "samples); k >= 2 = k fold models, each sample scored by one that did not see it")
    empty_fallback: Literal["consistent", "all", "fail"] = Field(
        "consistent", description="what a capability trains on when the reward model keeps none of it")
    lr: float | None = Field(None, gt=0, description="reward training lr; default train.lr")
    epochs: float | None = Field(None, gt=0, description="reward training epochs; default train.epochs")

    @model_validator(mode="after")
    def _folds(self) -> RewardSpec:
        if self.cross_fit == 1:
            raise ValueError("reward.cross_fit: 1 fold cannot hold samples out; allowed: 0 (off) or >= 2")
        return self


class SecondStageSpec(Strict):
    """Stage 2 of the two-stage methods (ours, ours-random): the wts model trained on the
    selection. Unset fields take `train`'s; a set one joins that stage's artifact key."""

    lr: float | None = Field(None, gt=0, description="stage-2 lr; default train.lr")
    epochs: float | None = Field(None, gt=0, description="stage-2 epochs; default train.epochs")
    toward_base: float | None = Field(None, ge=0, le=1, description="stage-2 share of weight averaging; "
                                      "default train.toward_base")
    anchor: Literal["stage1", "pretrained"] = Field(
        "stage1", description="what stage-2 averaging moves back toward: the wts model (the stage's "
                              "base) or the strong rung's pretrained weights")


class AuxConfSpec(Strict):
    """Burns et al.'s auxiliary confidence loss (`wts-aux-conf`; openai/weak-to-strong's
    `logconf`): (1 - a) CE(weak labels) + a CE(the student's hardened predictions), a ramped
    from 0 to `weight` over the first `warmup` share of the steps (runtime/tasks.py)."""

    weight: float = Field(0.5, gt=0, le=1, description="alpha_max: the weight of the student's own "
                          "hardened predictions once warmed up (the reference code's aux_coef)")
    warmup: float = Field(0.1, ge=0, lt=1, description="share of the steps over which alpha rises "
                          "linearly from 0 to weight; 0 = weight from the first step")


class ConfidentFilterSpec(Strict):
    """`confident-filter`: the strong base trained on the weak labels the weak model is most
    sure of (its mean log-probability per label token), gold never read."""

    share: float = Field(0.5, gt=0, le=1, description="per capability, the most confident share of "
                         "the weak labels kept")


class W2SRSpec(Strict):
    """Weak-to-strong reasoning (Yang, Ma, Liu 2024): stage I's selective fine-tuning, stage II's
    DPO on contrastive samples, and the DPO model whose implicit reward selects in
    ours-dpo-reward. Unset lr / epochs take `train`'s; the DPO stage never averages weights."""

    rounds: int = Field(2, ge=1, description="stage-I rounds: round r > 1 relabels D^b with round r-1's model")
    shots: int = Field(3, ge=1, description="weak-labelled demonstrations before each prompt of the strong "
                                            "model's in-context answer (stage I)")
    samples: int = Field(10, ge=2, description="answers sampled per item for the contrastive pairs (k)")
    temperature: float = Field(1.0, gt=0, description="sampling temperature of those answers")
    min_majority: float = Field(0.6, gt=0, le=1, description="skip an item whose most frequent sampled "
                                                            "answer has a smaller share")
    confident_majority: float = Field(0.8, gt=0, le=1, description="when the weak answer is not the majority, "
                                      "pair majority over weak only at this share or above")
    beta: float = Field(0.1, gt=0, description="DPO's beta (sigmoid loss); also the implicit reward's scale")
    lr: float | None = Field(None, gt=0, description="DPO lr; default train.lr")
    epochs: float | None = Field(None, gt=0, description="DPO epochs; default train.epochs")

    @model_validator(mode="after")
    def _shares(self) -> W2SRSpec:
        if self.confident_majority < self.min_majority:
            raise ValueError(f"w2sr.confident_majority: {self.confident_majority} is below w2sr.min_majority "
                             f"({self.min_majority}); allowed: a share in [{self.min_majority}, 1]")
        return self


class SweepConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$",
                      description="sweep name: results and stage log go to <storage>/sweeps/<name>/")
    storage: str = Field(description="artifact/results root: a local path or a URI (s3://, gs://)")
    ladder: LadderSpec = Field(description="the model sizes the grid pairs up")
    capabilities: list[str] = Field(min_length=1, description="capability names (listed below)")
    splits: SplitSizes = Field(description="per-capability split sizes")
    split_overrides: dict[str, SplitSizes] = Field(
        default_factory=dict, description="per-capability sizes where `splits` does not fit")
    data_dir: str | None = Field(
        None, description="offline mirror (python -m w2s_ray.data_mirror): loaded datasets read "
                          "<data_dir>/<capability>/<split>.parquet|jsonl instead of the hub")
    pairs: list[tuple[str, str]] | Literal["adjacent", "all"] = Field(
        "adjacent", description="(weak, strong) rung pairs: 'adjacent', 'all' (every weak < strong) "
                                "or a list, e.g. [[t1, t3]]")
    methods: list[str] = Field(default_factory=lambda: ["weak", "wts", "ceiling"], min_length=1,
                               description="method names; see w2s_ray.methods.allowed()")
    seeds: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=lambda: [0], min_length=1, description="training seeds (>= 0): one trial per (pair, seed)")
    data_seed: Annotated[int, Field(ge=0)] | Literal["same"] = Field(
        0, description="draws D^a, D^b and the test split once for every training seed, so seeds "
                       "measure training variance on one test set; 'same' = each seed redraws them")
    evaluate_on: Literal["test", "validation"] = Field(
        "test", description="the split every method is scored on: 'validation' holds out items "
                            "apart from D^a, D^b and test (synthetic: their validation partition; "
                            "datasets: carved from the training split after D^a and D^b), to choose "
                            "settings (learning rate, epochs) without reading test")
    train: TrainHParams = Field(TrainHParams(), description="fine-tuning through Ray Train")
    inference: InferenceSpec = Field(InferenceSpec(), description="generation and scoring through Ray Data")
    reward: RewardSpec = Field(RewardSpec(), description="the reward model that selects weak samples")
    stage2: SecondStageSpec = Field(SecondStageSpec(), description="stage 2 of ours and ours-random")
    w2sr: W2SRSpec = Field(W2SRSpec(), description="w2sr-sft, w2sr-dpo and ours-dpo-reward")
    sweep: SweepSpec = Field(SweepSpec(), description="the Ray Tune grid")
    tracking: TrackingSpec = Field(TrackingSpec(), description="MLflow and W&B tracking of the trials' "
                                                               "metrics and the final tables (off by default)")
    aux_conf: AuxConfSpec = Field(AuxConfSpec(), description="the auxiliary confidence loss of wts-aux-conf")
    confident_filter: ConfidentFilterSpec = Field(ConfidentFilterSpec(),
                                                  description="the weak-confidence filter of confident-filter")

    @model_validator(mode="after")
    def _check_fields(self) -> SweepConfig:
        """What a config can check alone; the names it shares with the registries of
        capabilities, methods and model sizes are checked by `w2s_ray.checks`."""
        for cap in self.split_overrides:
            if cap not in self.capabilities:
                raise ValueError(f"split_overrides: {cap!r} is not a configured capability; "
                                 f"allowed: {self.capabilities}")
        names = self.ladder.names()
        if len(set(names)) != len(names):
            raise ValueError(f"ladder.rungs: rung names must be unique, got {names}")
        if not isinstance(self.pairs, str):
            for weak, strong in self.pairs:
                for rung in (weak, strong):
                    if rung not in names:
                        raise ValueError(f"pairs: unknown rung {rung!r}; allowed: {names}")
                if names.index(weak) >= names.index(strong):
                    raise ValueError(f"pairs: weak rung must be below strong, got ({weak}, {strong})")
        stage2_share = self.train.toward_base if self.stage2.toward_base is None else self.stage2.toward_base
        if self.stage2.anchor == "pretrained" and not stage2_share:
            raise ValueError("stage2.anchor: 'pretrained' is where stage-2 weight averaging returns, and "
                             "stage 2 averages nothing (stage2.toward_base, else train.toward_base, is 0); "
                             "allowed: 'stage1', or a share > 0")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods: each method once, got {self.methods}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: each seed once (a repeated seed would rerun the same trial), got {self.seeds}")
        return self

    def stage2_hparams(self) -> TrainHParams:
        update = {k: v for k, v in self.stage2.model_dump(exclude={"anchor"}).items() if v is not None}
        return TrainHParams.model_validate({**self.train.model_dump(), **update})

    def with_absolute_roots(self) -> SweepConfig:
        roots = {"storage": absolute_root(self.storage)}
        if self.data_dir is not None:
            roots["data_dir"] = absolute_root(self.data_dir)
        return self.model_copy(update=roots)

    def sizes_for(self, capability: str) -> SplitSizes:
        return self.split_overrides.get(capability, self.splits)

    def pair_list(self) -> list[tuple[str, str]]:
        names = self.ladder.names()
        if self.pairs == "adjacent":
            return list(itertools.pairwise(names))
        if self.pairs == "all":
            return [(w, s) for i, w in enumerate(names) for s in names[i + 1 :]]
        return [tuple(p) for p in self.pairs]


class ConfigError(ValueError):
    """A config field is unknown or invalid; the message names the field and allowed values."""


def preset_names() -> list[str]:
    files = resources.files("w2s_ray").joinpath("presets").iterdir()
    return sorted(p.name.removesuffix(".yaml") for p in files if p.name.endswith(".yaml"))


def load_preset(name: str) -> dict[str, Any]:
    """A preset's fields: a shipped preset by name, or a YAML file of the user's."""
    if name.endswith((".yaml", ".yml")) and Path(name).is_file():
        text = Path(name).read_text()
    elif name not in preset_names():
        raise ConfigError(f"preset: unknown preset {name!r}; allowed: {preset_names()} or a YAML path")
    else:
        text = resources.files("w2s_ray").joinpath(f"presets/{name}.yaml").read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"preset: {name} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"preset: {name} must be a mapping of config fields (name: ..., storage: ...), "
                          f"got {type(data).__name__}")
    return data


def apply_override(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `a.b.c=value` in a nested dict; the value is parsed as YAML (`1e-4`, `[0, 1]`, `true`)."""
    keys = dotted.split(".")
    node = data
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: {k!r} is not a section")
    try:
        node[keys[-1]] = yaml.safe_load(value) if isinstance(value, str) else value
    except yaml.YAMLError as err:
        raise ConfigError(f"{dotted}: the value {value!r} is not valid YAML: {err}") from None


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str] | None:
    """The field names allowed at a pydantic error location, for 'unknown field' messages."""
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        inner = field.annotation
        candidates = [inner, *typing.get_args(inner)]
        for arg in list(candidates):
            candidates += typing.get_args(arg)
        sub = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if sub is None:
            return None
        model = sub
    return list(model.model_fields)


def build_config(data: dict[str, Any]) -> SweepConfig:
    try:
        return SweepConfig.model_validate(data)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            where = ".".join(str(p) for p in e["loc"]) or "config"
            if e["type"] == "extra_forbidden":
                allowed = _fields_at(SweepConfig, e["loc"][:-1])
                lines.append(f"{where}: unknown field; allowed fields: {allowed}")
            elif e["type"] == "value_error" and not e["loc"]:
                lines.append(e["msg"].removeprefix("Value error, "))
            else:
                lines.append(f"{where}: {e['msg']}")
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines)) from None


def absolute_root(root: str) -> str:
    """A local root as an absolute path; a URI (s3://, gs://, file://) as it is.

    Every Ray process (Tune trial, Train worker, Data actor) has its own working directory, so a
    relative root must be resolved once, here in the driver, or each process would make its own
    store and nothing would be shared or kept.
    """
    if "://" in root:
        return root
    return str(Path(root).expanduser().resolve())


def load_config(preset: str, overrides: dict[str, Any] | None = None) -> SweepConfig:
    """The driver's config: the preset, then the overrides, with its roots made absolute."""
    data = load_preset(preset)
    for dotted, value in (overrides or {}).items():
        apply_override(data, dotted, value)
    return build_config(data).with_absolute_roots()
