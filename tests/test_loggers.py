"""train.report_to: a real tiny run logged to TensorBoard, W&B (offline) and MLflow (file store), read back."""

import importlib.util
import json
import struct

import pytest

from conftest import TINY_RUN
from grpo_cli.compose import compose
from grpo_cli.errors import GrpoError
from grpo_cli.monitoring.loggers import check_installed, mlflow_name
from grpo_cli.training.trainer import train

BACKENDS = ["tensorboard", "wandb", "mlflow"]
missing = [name for name in BACKENDS if importlib.util.find_spec(name) is None]


@pytest.fixture(scope="module")
def logged_run(tiny_model, tmp_path_factory):
    """Two steps, evals at steps 0 and 2, every installed backend on."""
    out = tmp_path_factory.mktemp("logged") / "run"
    installed = [name for name in BACKENDS if name not in missing]
    config = compose([*TINY_RUN, f"model.name_or_path={tiny_model}", f"train.output_dir={out}", "train.max_steps=2",
                      f"train.report_to=[{','.join(installed)}]", "algorithm.kl_coef=0.04"])
    train(config)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [json.loads(line) for line in (out / "evals.jsonl").read_text().splitlines()]
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    return out, metrics, evals, samples


def numeric(record: dict) -> dict:
    return {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}


@pytest.mark.skipif("tensorboard" in missing, reason="tensorboard is not installed (pip install 'grpo-cli[tensorboard]')")
def test_tensorboard_event_files_hold_every_metric_the_config_and_the_samples(logged_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, metrics, evals, samples = logged_run
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    for record in metrics:
        for key, value in numeric(record).items():
            logged = {event.step: event.value for event in events.Scalars(key)}
            assert logged[record["step"]] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    for record in evals:
        for key, value in numeric(record).items():
            assert {e.step: e.value for e in events.Scalars(f"eval/{key}")}[record["step"]] == pytest.approx(value), key
    assert "kl/mean" in tags["scalars"] and "eval/pass@2" in tags["scalars"]
    texts = {event.step: event.tensor_proto.string_val[0].decode() for event in events.Tensors("samples/text_summary")}
    assert sorted(texts) == [1, 2]
    step_1 = [group for group in samples if group["step"] == 1]
    assert texts[1].count("\n| 1 |") == sum(len(group["completions"]) for group in step_1) >= 2 * 4
    assert step_1[0]["prompt"].splitlines()[0] in texts[1]
    # The hyperparameters: the session-start plugin data names every config key.
    hparams = events.summary_metadata["_hparams_/session_start_info"].plugin_data.content
    assert b"algorithm.group_size" in hparams and b"train.report_to" in hparams


def wandb_records(path):
    """The records of a W&B offline run file (LevelDB log format: 32 KiB blocks of checksummed chunks)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, block, pending = 7, 32768, b""
    while position + 7 <= len(data):
        left = block - position % block
        _checksum, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if left < 7 or (kind == 0 and length == 0):  # block padding
            position += left
            continue
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


@pytest.mark.skipif("wandb" in missing, reason="wandb is not installed (pip install 'grpo-cli[wandb]')")
def test_wandb_offline_run_holds_every_metric_the_config_and_the_samples(logged_run):
    out, metrics, evals, samples = logged_run
    (run_file,) = (out / "wandb").glob("offline-run-*/run-*.wandb")
    history, config = {}, {}
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            items = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            history.setdefault(items["_step"], {}).update(items)
        elif kind in ("run", "config"):
            updates = record.run.config.update if kind == "run" else record.config.update
            config |= {item.key: json.loads(item.value_json) for item in updates}
    for record in metrics + evals:
        prefix = "eval/" if record in evals else ""
        for key, value in numeric(record).items():
            assert history[record["step"]][prefix + key] == pytest.approx(value), key
    assert config["algorithm"]["group_size"] == 4 and config["train"]["report_to"] == ["tensorboard", "wandb", "mlflow"]
    tables = sorted((out / "wandb").glob("offline-run-*/files/media/table/samples_*.table.json"))
    assert len(tables) == 2
    table = json.loads(tables[0].read_text())
    assert table["columns"] == ["step", "prompt", "answer", "completion", "reward", "reason", "advantage"]
    step_1 = [group for group in samples if group["step"] == 1]
    assert len(table["data"]) == sum(len(group["completions"]) for group in step_1)
    assert table["data"][0][3] == samples[0]["completions"][0]


@pytest.mark.skipif("mlflow" in missing, reason="mlflow is not installed (pip install 'grpo-cli[mlflow]')")
def test_mlflow_file_store_holds_every_metric_the_config_and_the_samples(logged_run):
    from mlflow.tracking import MlflowClient

    out, metrics, evals, samples = logged_run
    client = MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("grpo-cli").experiment_id])
    assert run.info.status == "FINISHED"
    for record in metrics + evals:
        prefix = "eval/" if record in evals else ""
        for key, value in numeric(record).items():
            history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, mlflow_name(prefix + key))}
            assert history[record["step"]] == pytest.approx(value), key
    assert mlflow_name("eval/pass@2") == "eval/pass_at_2"
    assert run.data.params["algorithm.group_size"] == "4" and run.data.params["eval.pass_at"] == "[1, 2]"
    local = client.download_artifacts(run.info.run_id, "samples/step_000002.json", str(out))
    rows = json.loads(open(local).read())
    step_2 = [group for group in samples if group["step"] == 2]
    assert len(rows) == sum(len(group["completions"]) for group in step_2)
    assert rows[0]["completion"] == step_2[0]["completions"][0] and rows[0]["reason"] == step_2[0]["reasons"][0]


def test_a_missing_backend_is_one_line_naming_the_extra(monkeypatch, tmp_path, tiny_model):
    import importlib.util as util

    real = util.find_spec
    monkeypatch.setattr(util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(GrpoError, match=r"^train.report_to includes wandb but it is not installed; "
                                        r"pip install 'grpo-cli\[wandb\]'$"):
        check_installed(["tensorboard", "wandb"])

    # train() checks before it loads a model or writes anything.
    out = tmp_path / "run"
    config = compose([*TINY_RUN, f"model.name_or_path={tiny_model}", f"train.output_dir={out}", "train.report_to=[wandb]"])
    with pytest.raises(GrpoError, match="grpo-cli\\[wandb\\]"):
        train(config)
    assert not out.exists()
