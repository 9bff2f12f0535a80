"""`train.report_to`: the run's metrics, evals, config and samples also go to TensorBoard, W&B or MLflow.

One small interface, `Logger`: hyperparameters once, numbers per step (training metrics as in metrics.jsonl,
eval results as `eval/<key>`), and a samples table per step. Each backend is an optional extra, imported only
when chosen; all write local files under the run directory and need no network:
    tensorboard  RUN_DIR/tensorboard/ (event files)            pip install 'grpo-cli[tensorboard]'
    wandb        RUN_DIR/wandb/offline-run-*/ (offline mode)    pip install 'grpo-cli[wandb]'   (`wandb sync` uploads it)
    mlflow       RUN_DIR/mlruns/ (the MLflow file store)        pip install 'grpo-cli[mlflow]'
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
from pathlib import Path

from grpo_cli.config import flatten
from grpo_cli.errors import GrpoError

SAMPLE_COLUMNS = ("step", "prompt", "answer", "completion", "reward", "reason", "advantage")


def check_installed(report_to: list[str]) -> None:
    """Fail before any model loads when a chosen backend's package is missing (each backend's module, and the
    pyproject extra that installs it, have the backend's name)."""
    for name in report_to:
        if importlib.util.find_spec(name) is None:
            raise GrpoError(f"train.report_to includes {name} but it is not installed; pip install 'grpo-cli[{name}]'")


def hyperparameters(config: dict) -> dict:
    """The config by dotted key, lists as their JSON text (hyperparameters are scalars)."""
    return {key: json.dumps(value) if isinstance(value, (list, tuple)) else value for key, value in flatten(config).items()}


def numbers(record: dict, prefix: str = "") -> dict[str, float]:
    """The numeric entries of a metrics or eval record (warnings, names and nulls left out)."""
    return {
        prefix + key: float(value) for key, value in record.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step"
    }


def sample_rows(step: int, groups: list[dict]) -> list[list]:
    """One row per completion of the logged groups, in SAMPLE_COLUMNS order."""
    return [
        [step, group["prompt"], group["answer"], completion, reward, reason, advantage]
        for group in groups
        for completion, reward, reason, advantage in zip(
            group["completions"], group["rewards"], group["reasons"], group["advantages"]
        )
    ]


class Logger:
    """What a backend implements; `open_loggers` builds the chosen ones."""

    def hyperparameters(self, config: dict) -> None: ...
    def metrics(self, step: int, values: dict[str, float]) -> None: ...
    def samples(self, step: int, rows: list[list]) -> None: ...
    def close(self) -> None: ...


class TensorBoardLogger(Logger):
    def __init__(self, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def hyperparameters(self, config: dict) -> None:
        from torch.utils.tensorboard.summary import hparams

        flat = {key: ("null" if value is None else value) for key, value in hyperparameters(config).items()}
        # add_hparams would open a second run folder; these three summaries go to this run's own file.
        for summary in hparams(flat, {}):
            self.writer.file_writer.add_summary(summary)

    def metrics(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def samples(self, step: int, rows: list[list]) -> None:
        cell = lambda value: str(value).replace("|", "\\|").replace("\n", "<br>")  # noqa: E731
        table = ["| " + " | ".join(SAMPLE_COLUMNS) + " |", "|" + "---|" * len(SAMPLE_COLUMNS)]
        table += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
        self.writer.add_text("samples", "\n".join(table), step)

    def close(self) -> None:
        self.writer.close()


class WandbLogger(Logger):
    def __init__(self, run_dir: Path):
        import wandb

        self.wandb = wandb
        # quiet: W&B's closing table of every metric would bury the run's own summary.
        self.run = wandb.init(project="grpo-cli", name=run_dir.name, dir=str(run_dir), mode="offline",
                              settings=wandb.Settings(quiet=True))

    def hyperparameters(self, config: dict) -> None:
        self.run.config.update(config)

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def samples(self, step: int, rows: list[list]) -> None:
        self.run.log({"samples": self.wandb.Table(columns=list(SAMPLE_COLUMNS), data=rows)}, step=step)

    def close(self) -> None:
        self.run.finish()


class MlflowLogger(Logger):
    def __init__(self, run_dir: Path):
        from mlflow.tracking import MlflowClient

        # MLflow 3 keeps the file store (no server, no database) behind this switch.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=(run_dir / "mlruns").resolve().as_uri())
        experiment = self.client.get_experiment_by_name("grpo-cli")
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment("grpo-cli")
        self.run_id = self.client.create_run(experiment_id, run_name=run_dir.name).info.run_id

    def hyperparameters(self, config: dict) -> None:
        from mlflow.entities import Param

        params = [Param(key, str(value)) for key, value in hyperparameters(config).items()]
        for start in range(0, len(params), 100):  # the store takes at most 100 params a batch
            self.client.log_batch(self.run_id, params=params[start : start + 100])

    def metrics(self, step: int, values: dict[str, float]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[
            Metric(mlflow_name(key), value, now, step) for key, value in values.items() if math.isfinite(value)
        ])

    def samples(self, step: int, rows: list[list]) -> None:
        records = [dict(zip(SAMPLE_COLUMNS, row)) for row in rows]
        self.client.log_dict(self.run_id, records, f"samples/step_{step:06d}.json")

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def mlflow_name(key: str) -> str:
    """MLflow allows letters, digits, _ - . space : / in names: pass@1 becomes pass_at_1."""
    return re.sub(r"[^\w\-. :/]", "_", key.replace("@", "_at_"))


class RunLoggers:
    """The loggers of train.report_to, called by the trainer at the points where it writes its JSONL files."""

    def __init__(self, report_to: list[str], run_dir: Path, config: dict):
        classes = {"tensorboard": TensorBoardLogger, "wandb": WandbLogger, "mlflow": MlflowLogger}
        self.loggers = [classes[name](run_dir) for name in report_to]
        for logger in self.loggers:
            logger.hyperparameters(config)

    def step(self, step: int, metrics: dict, groups: list[dict]) -> None:
        for logger in self.loggers:
            logger.metrics(step, numbers(metrics))
            if groups:
                logger.samples(step, sample_rows(step, groups))

    def eval(self, step: int, results: dict) -> None:
        for logger in self.loggers:
            logger.metrics(step, numbers(results, prefix="eval/"))

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()
