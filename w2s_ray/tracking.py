"""`tracking:`: each trial's metrics through Ray Tune's own logger callbacks for MLflow and W&B,
and the final tables as one more run beside the trials'.

The trials' runs are Tune's (`MLflowLoggerCallback`, `WandbLoggerCallback`: one run per trial,
its config as parameters, every `tune.report` as metrics); the sweep's tables (PGR, selection,
intervals, throughput) and report.html go to a run named `<sweep> tables`. Both libraries are
optional extras, checked before Ray starts (`missing`).
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import pandas as pd

from w2s_ray.artifacts import cache_dir
from w2s_ray.config import SweepConfig

#: field -> (module, the pip extra that installs it)
LIBRARIES = {"tracking.mlflow": ("mlflow", "mlflow"), "tracking.wandb": ("wandb", "wandb")}


def asked(config: SweepConfig) -> list[str]:
    t = config.tracking
    return [f for f, on in (("tracking.mlflow", t.mlflow), ("tracking.wandb", t.wandb != "off")) if on]


def missing(config: SweepConfig) -> str | None:
    """The first tracking field whose library is not installed, as a message naming the extra."""
    for field in asked(config):
        module, extra = LIBRARIES[field]
        if importlib.util.find_spec(module) is None:
            return (f"{field}: tracking asks for {module}, which is not installed; install it with "
                    f"`pip install 'w2s-ray[{extra}]'`, or allowed: {'null' if extra == 'mlflow' else 'off'}")
    return None


def mlflow_uri(target: str) -> str:
    """A tracking URI: a URI as given, a local folder as a file store. MLflow 3 refuses its file
    store unless told it is wanted (it keeps it in maintenance mode): a folder says so."""
    if "://" in target or ":" in target.split("/", 1)[0]:
        return target
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    return Path(target).expanduser().resolve().as_uri()


def wandb_dir(config: SweepConfig) -> str:
    """Where W&B writes its (offline) runs: on this machine, under the cache."""
    folder = cache_dir() / "wandb" / config.name
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder)


def callbacks(config: SweepConfig, run_id: str) -> list:
    """Ray Tune's logger callbacks for the trackers `config.tracking` turns on."""
    t, out = config.tracking, []
    if t.mlflow:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        out.append(MLflowLoggerCallback(tracking_uri=mlflow_uri(t.mlflow),
                                        experiment_name=t.mlflow_experiment or config.name,
                                        tags={"sweep": config.name, "run_id": run_id}))
    if t.wandb != "off":
        from ray.air.integrations.wandb import WandbLoggerCallback

        # Ray's callback asks for an API key unless the mode says offline in the environment.
        os.environ["WANDB_MODE"] = t.wandb
        out.append(WandbLoggerCallback(project=t.wandb_project or config.name, group=run_id,
                                       mode=t.wandb, dir=wandb_dir(config)))
    return out


def log_tables(config: SweepConfig, run_id: str, tables: dict[str, pd.DataFrame], report: bytes | None) -> None:
    """The final tables (CSV) and report.html as the `<sweep> tables` run of each tracker."""
    t = config.tracking
    if t.mlflow:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=mlflow_uri(t.mlflow))
        name = t.mlflow_experiment or config.name
        experiment = client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
        run = client.create_run(experiment_id, run_name=f"{config.name} tables",
                                tags={"sweep": config.name, "run_id": run_id})
        with tempfile.TemporaryDirectory() as tmp:
            for table, frame in tables.items():
                frame.to_csv(f"{tmp}/{table}.csv", index=False)
            if report is not None:
                Path(tmp, "report.html").write_bytes(report)
            client.log_artifacts(run.info.run_id, tmp)
        client.set_terminated(run.info.run_id)
    if t.wandb != "off":
        import wandb

        run = wandb.init(project=t.wandb_project or config.name, group=run_id, name=f"{config.name} tables",
                         mode=t.wandb, dir=wandb_dir(config))
        run.log({table: wandb.Table(dataframe=frame) for table, frame in tables.items()})
        run.finish()
