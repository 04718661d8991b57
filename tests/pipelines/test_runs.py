"""A real local run through kfp.local, status, rerun of a damaged split, and submit with a recorded kfp.Client."""

import builtins
import contextlib
import io
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from acgan.checkpoint import complete_steps
from acgan.collapse import real_diversity
from acgan.ensemble import assemble_ensemble, load_ensemble
from acgan.errors import UserError
from acgan.cluster_settings import ClusterSettings
from acgan.experiment import load_settings, prepare_experiment, split_statuses, train_one_split
from acgan.layout import SUBMISSION_KEY, lease_key
from acgan.lease import Lease
from acgan.settings import RunSettings
from acgan.store import open_store
from pipelines import runs
from pipelines.console import summary_text
from pipelines.launch_settings import KfpTarget, LocalSettings, SubmitSettings
from pipelines.runs import RecordedChanges
from tests.conftest import KillTaskOnce
from tests.serving.chromium import open_in_chromium

TINY = dict(dataset="digits", resolution=32, classes_per_split=5, steps=4, batch_size=8, checkpoint_every=2,
            width=0.0625, samples_per_class=6, pairs=10, classifier_steps=30)


def submission(host: str, **settings) -> SubmitSettings:
    """A submission to `host` without the preflight, which asks a Kubernetes API there is none of here."""
    return SubmitSettings(host=host, preflight=False, **settings)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """One real pipeline run (prepare -> 2 x (shard, train) -> assemble -> evaluate) through kfp.local, as `acgan run`
    makes it (task logs in files, progress on stderr), shared by the tests.
    Split 1's first attempt fails: its task is killed outright as soon as its trainer starts, and the task's retry
    inside ParallelFor trains the split."""
    root = tmp_path_factory.mktemp("run")
    killer, original_print, console = KillTaskOnce(str(root / "store"), 1), builtins.print, io.StringIO()
    killer.start()
    try:
        with contextlib.redirect_stderr(console):
            result = runs.run_local(RunSettings(store=str(root / "store"), **TINY),
                                    local=LocalSettings(pipeline_root=root / "kfp-local"), quiet=True)
    finally:
        killer.done.set()
        killer.join()
    assert builtins.print is original_print  # kfp.local's indenting print never outlives the run
    assert killer.killed is not None, "split 1's first attempt was not killed"
    return root, {**result, "console": console.getvalue()}


@pytest.fixture
def finished_store(local_run, tmp_path):
    root, _ = local_run
    shutil.copytree(root / "store", tmp_path / "store")
    return open_store(str(tmp_path / "store"))


def test_local_run_trains_every_split_and_assembles(local_run):
    root, result = local_run
    store = open_store(str(root / "store"))
    assert result["ensemble"] == f"{store.uri}/ensemble.json"
    assert [s.state for s in split_statuses(store)] == ["complete", "complete"]
    assert store.exists("data/split-00000.json") and store.exists("data/split-00001.json")  # built in the fan-out
    manifest = load_ensemble(store)
    assert [(m.class_id, m.split, m.local_index, m.step) for m in manifest.classes] == [
        (c, c // 5, c % 5, 4) for c in range(10)]
    assert json.loads(store.read_bytes("experiment.json"))["steps"] == 4
    # The two training tasks ran side by side, sharing the cores.
    cores = len(os.sched_getaffinity(0))
    for split in (0, 1):
        assert json.loads(store.read_bytes(f"splits/split-{split:05d}/config.json"))["threads"] == max(1, cores // 2)
    # The evaluation step ran on the assembled ensemble.
    metrics = json.loads(store.read_bytes("eval/metrics.json"))
    assert len(metrics["classes"]) == 10 and 0 <= metrics["summary"]["accuracy"] <= 1
    assert metrics["computed_on"]["samples_per_class"] == 6
    assert store.exists("eval/report.html") and store.exists("eval/samples-split-00001.png")
    assert result["report"] == f"{store.uri}/eval/report.html"


def test_a_quiet_run_shows_progress_and_files_each_task_log(local_run):
    root, result = local_run
    console = result["console"].splitlines()
    assert console[0] == "planning the class splits..." and "training..." in console
    assert sorted(line for line in console if line.endswith("step 4/4")) == ["  split 0: step 4/4",
                                                                            "  split 1: step 4/4"]
    assert [line.split(":")[0] for line in console if ": done in " in line] == [
        "planning the class splits", "preparing each split's data", "training", "assembling", "evaluating"]
    # Training is done when every split is, not when the failed attempt and the other split have ended.
    trained_at = console.index(next(line for line in console if line.startswith("training: done in ")))
    assert trained_at > max(i for i, line in enumerate(console) if line.endswith("step 4/4"))
    assert "Executing task" not in result["console"] and "executor_input" not in result["console"]
    # Split 1's first attempt failed (the fixture killed it), and its retry trained it: both attempts have logs.
    failed = [line for line in console if line.startswith("training: a task failed; its log: ")]
    assert len(failed) == 1 and console[console.index(failed[0]) + 1] == "  retrying it (the task's retry policy)"
    assert "train-split: done in" not in Path(failed[0].rpartition(" ")[2]).read_text()
    assert (Path(result["logs"]) / "run.log").is_file()  # kfp.local's own lines
    logs = sorted(Path(result["logs"]).glob("[0-9]*.log"))
    tasks = [p.name.partition("-")[2] for p in logs]  # NN-task.log, numbered in the order the tasks started
    assert sorted(tasks) == ["assemble-ensemble.log", "evaluate-ensemble.log", "prepare-data.log",
                             "prepare-split-data.log", "prepare-split-data.log"] + ["train-split.log"] * 3
    assert tasks[0] == "prepare-data.log" and tasks[-2:] == ["assemble-ensemble.log", "evaluate-ensemble.log"]
    trained = "".join(p.read_text() for p in logs if p.name.endswith("-train-split.log"))
    assert "split 0 step 4/4" in trained and "split 1 step 4/4" in trained
    assert "evaluate-ensemble: done in" in logs[-1].read_text()


def test_the_summary_names_accuracy_diversity_and_where_to_look(local_run):
    root, result = local_run
    metrics = json.loads(open_store(str(root / "store")).read_bytes("eval/metrics.json"))
    text = summary_text(metrics, result["report"], result["samples"], root / "store" / "eval" / "report.html")
    s = metrics["summary"]
    assert text.startswith(f"{s['accuracy']:.1%} of samples are recognised as their class")
    rows = [line.split() for line in text.splitlines() if line[:1].isdigit() and "±" in line]
    assert [row[0] for row in rows] == [str(c) for c in range(10)]
    for row, c in zip(rows, metrics["classes"]):
        assert row[1] == f"{c['accuracy']:.1%}" and row[2] == f"{c['ms_ssim']:.2f}"
        assert (row[-1] == "collapsing") == c["low_diversity"]
    assert f"report:       {result['report']}" in text
    assert f"python -m webbrowser {(root / 'store' / 'eval' / 'report.html').as_uri()}" in text


def test_a_failing_task_shows_the_end_of_its_log(tmp_path):
    console = io.StringIO()
    settings = RunSettings(store=str(tmp_path / "store"), **{**TINY, "dataset": "folder"},
                           source=str(tmp_path / "no-such-folder"))
    with contextlib.redirect_stderr(console), pytest.raises(UserError, match=r"task 'prepare-data'.*its log: "):
        runs.run_local(settings, local=LocalSettings(pipeline_root=tmp_path / "kfp-local"), quiet=True)
    shown = console.getvalue()
    assert "the last lines of" in shown and "01-prepare-data.log" in shown
    assert "no-such-folder" in shown  # the step's own one-line error, from its log


def test_rerun_trains_exactly_the_damaged_split(finished_store, tmp_path):
    store = finished_store
    keep = {k: store.read_bytes(k) for k in store.list("splits/split-00000/")}
    for key in store.list("splits/split-00001/checkpoints/"):
        store.delete(key)
    assert [s.state for s in split_statuses(store)] == ["complete", "not started"]
    result = runs.rerun(store, local=LocalSettings(pipeline_root=tmp_path / "kfp"))
    assert result["trained"] == [1]
    assert [s.state for s in split_statuses(store)] == ["complete", "complete"]
    assert {k: store.read_bytes(k) for k in store.list("splits/split-00000/")} == keep  # never retrained
    assert load_ensemble(store).member(7).step == 4
    # Alone, the retrained split had every core.
    assert json.loads(store.read_bytes("splits/split-00001/config.json"))["threads"] == len(os.sched_getaffinity(0))


def test_the_ui_artifacts_of_the_local_run(local_run):
    """kfp.local wrote each split's sample page (a grid per class, embedded PNG) and the ensemble manifest."""
    root, _ = local_run
    store = open_store(str(root / "store"))
    pages = sorted((root / "kfp-local").rglob("samples"))
    assert len(pages) == 2  # one per split; split 1's retry wrote its own
    for page in pages:
        text = page.read_text()
        assert text.count("data:image/png;base64,") == 2 and "samples per class" in text
    (manifest,) = (root / "kfp-local").rglob("manifest")
    assert json.loads(manifest.read_text()) == json.loads(store.read_bytes("ensemble.json"))
    real = real_diversity(store)
    assert sorted(map(int, real)) == list(range(10)) and all(0 < v < 1 for v in real.values())


def test_the_collapse_alarm_names_the_last_healthy_checkpoint(finished_store, capsys):
    """Split 1's stats as a trainer writes them: healthy at step 2, class 7 as alike as copies at step 4."""
    from acgan_cli.main import main
    from acgan.split_report import split_metrics

    store = finished_store
    assert complete_steps(store, 1) == [2, 4]
    lines = [json.loads(line) for line in store.read_bytes("splits/split-00001/stats.jsonl").decode().splitlines()]
    assert [line["step"] for line in lines] == [2, 4]
    lines[0]["ms_ssim"] = {str(c): 0.0 for c in range(5, 10)}
    lines[1]["ms_ssim"] = {**{str(c): 0.0 for c in range(5, 10)}, "7": 0.99}
    store.write_bytes("splits/split-00001/stats.jsonl", "".join(json.dumps(line) + "\n" for line in lines).encode())
    threshold = max(real_diversity(store).values())

    (status0, status1) = split_statuses(store)
    assert status1.collapse.model_dump() == {"step": 4, "classes": {"7": 0.99}, "threshold": threshold,
                                             "last_healthy_checkpoint": 2}
    assert status0.collapse is None or status0.collapse.step == 4  # split 0's stats are the run's own
    assert main(["status", "--store", store.uri]) == 0
    out = capsys.readouterr().out
    assert "complete, COLLAPSING" in out
    assert (f"split 1: class 7 collapsing at step 4: its samples are as alike as MS-SSIM 0.990, at or above "
            f"{threshold:.3f}, the real data's least diverse class. What to do: its checkpoint of step 2 is the last "
            f"before it; look at its samples (`acgan sample --store {store.uri} --class 7 --out class-7.png`), and if "
            "they are alike, train the split again in a new store with --mode-seeking or --augment") in out
    metrics = split_metrics(store, 1)
    assert metrics["collapsing"] == 1.0 and metrics["last_healthy_checkpoint"] == 2.0
    assert metrics["ms_ssim_real_least_diverse"] == threshold and metrics["step"] == 4


def test_a_complete_split_returns_at_once(finished_store):
    """What a retry or a clone of the run in the KFP UI does with a finished split: nothing is trained or written."""
    before = {k: finished_store.read_bytes(k) for k in finished_store.list("splits/")}
    assert train_one_split(finished_store, 0) == 0
    assert {k: finished_store.read_bytes(k) for k in finished_store.list("splits/")} == before


def test_the_plan_fans_out_over_the_unfinished_splits_only(finished_store, caplog):
    """A Clone run in the KFP UI (every parameter as before): splits at their target get no task, so no GPU node and
    no image pull; `include_complete` runs them all; a longer target makes them unfinished again."""
    settings = load_settings(finished_store).model_copy(update={"store": finished_store.uri})  # this copy's
    with caplog.at_level("INFO", logger="acgan.experiment"):
        assert prepare_experiment(settings) == [0]  # nothing to train: one task that returns at once, not an empty loop
    assert "fanning out over 1 of 2 splits (2 already at their 4 steps)" in caplog.text
    assert prepare_experiment(settings.model_copy(update={"include_complete": True})) == [0, 1]
    assert prepare_experiment(settings.model_copy(update={"steps": settings.steps + 2})) == [0, 1]
    assert prepare_experiment(settings.model_copy(update={"steps": settings.steps + 2, "split_ids": [1]})) == [1]


def test_rerun_submits_with_the_recorded_cluster_settings(finished_store, s3_env, monkeypatch, tmp_path):
    """`acgan submit` records how it compiled and submitted in the store; `acgan rerun` on the cluster reuses that
    (image, node selector, toleration, experiment, uploaded pipeline), an option given replacing its value."""
    from kfp import compiler

    s3 = open_store(s3_env)
    for key in finished_store.list(""):
        if not key.startswith("splits/split-00001/checkpoints/"):  # split 1 lost its checkpoints
            s3.write_bytes(key, finished_store.read_bytes(key))
    client = RecordingClient()
    client.calls = []
    monkeypatch.setattr(runs, "kfp_client", lambda host, namespace: client)
    cluster = ClusterSettings(image="registry.example.com/acgan:7", node_selector={"pool": "h100"},
                              gpu_toleration="gpu-taint")
    runs.submit(load_settings(s3).model_copy(update={"store": s3_env}), cluster=cluster,
                target=KfpTarget(namespace="team-a", experiment="exp-a"), submission=submission("https://kfp.example"))
    assert json.loads(s3.read_bytes(SUBMISSION_KEY))["cluster"]["image"] == "registry.example.com/acgan:7"

    result = runs.rerun(s3, submission=submission("https://kfp.example", run_name="again"))
    assert result["trained"] == [1]
    kind, pipeline_func, arguments, run_name, experiment, namespace, account = client.calls[1]
    assert (kind, run_name, experiment, namespace, account) == ("from_func", "again", "exp-a", "team-a",
                                                                "acgan-pipeline")
    assert arguments["split_ids"] == [1]
    path = tmp_path / "rerun.yaml"
    compiler.Compiler().compile(pipeline_func, str(path))
    spec, platform = yaml.safe_load_all(path.read_text())
    image = spec["deploymentSpec"]["executors"]["exec-train-split"]["container"]["image"]
    assert image == "registry.example.com/acgan:7"
    train = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train-split"]
    assert train["nodeSelector"]["labels"] == {"pool": "h100"} and train["tolerations"][0]["key"] == "gpu-taint"

    # Options given replace the recorded ones; an uploaded pipeline's id is kept for the next rerun.
    runs.submit(load_settings(s3).model_copy(update={"store": s3_env}), cluster=cluster,
                target=KfpTarget(experiment="exp-a", pipeline_id="pl-9"), submission=submission("https://kfp.example"))
    runs.rerun(s3, submission=submission("https://kfp.example"),
               changes=RecordedChanges(target={"experiment": "exp-b", "service_account": ""}))
    assert client.calls[-1][:4] == ("uploaded", "exp-1", f"acgan-ensemble {s3_env}", "pl-9")
    assert client.calls[-1][-1] is None and client.experiments[-1] == "exp-b"
    runs.rerun(s3, submission=submission("https://kfp.example"),
               changes=RecordedChanges(target={"pipeline_id": "pl-10"}, cluster={"image": "r.example/a:8"}))
    assert client.calls[-1][3] == "pl-10"
    assert runs.load_submission(s3).cluster.image == "r.example/a:8"
    assert client.calls[-1][4]["compile"] == "auto"  # the recorded run setting

    # A run setting given to `acgan rerun` replaces the recorded one: compile off where compiling fails on the nodes.
    from acgan_cli.main import main

    assert main(["rerun", "--store", s3_env, "--host", "https://kfp.example", "--compile", "off",
                 "--no-preflight"]) == 0
    assert client.calls[-1][4]["compile"] == "off" and client.calls[-1][4]["split_ids"] == [1]
    assert main(["rerun", "--store", s3_env, "--host", "https://kfp.example", "--compile", "maybe",
                 "--no-preflight"]) == 2


def test_a_bad_recorded_submission_names_the_file(finished_store):
    finished_store.write_bytes(SUBMISSION_KEY, json.dumps({"cluster": {"image": "Not An Image!"},
                                                                 "namespace": None, "experiment": "e",
                                                                 "pipeline_id": None,
                                                                 "service_account": None}).encode())
    with pytest.raises(UserError, match=r"cluster\.json: cluster\.image: .*not an image reference"):
        runs.load_submission(finished_store)


def test_rerun_of_a_complete_experiment_trains_nothing(finished_store, tmp_path):
    before = {k: finished_store.read_bytes(k) for k in finished_store.list("splits/")}
    result = runs.rerun(finished_store, local=LocalSettings(pipeline_root=tmp_path / "kfp"))
    assert result["trained"] == [] and result["classes"] == 10
    assert {k: finished_store.read_bytes(k) for k in finished_store.list("splits/")} == before


def test_rerun_needs_a_plan_and_one_target(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        runs.rerun(open_store(str(tmp_path / "empty")), local=LocalSettings())
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no experiment settings"):
        runs.rerun(open_store(str(tmp_path / "empty")), local=LocalSettings())
    with pytest.raises(UserError, match="exactly one of --host"):
        runs.rerun(open_store(str(tmp_path / "empty")), submission=submission("http://kfp"), local=LocalSettings())


def test_assembly_lists_every_split_not_ready(finished_store):
    for key in finished_store.list("splits/split-00001/checkpoints/"):
        finished_store.delete(key)
    with pytest.raises(UserError, match=r"1 of 2 splits are not ready \(split 1: no complete checkpoint\)"):
        assemble_ensemble(finished_store, 4)
    with pytest.raises(UserError, match="split 0: at step 4 of 10"):
        assemble_ensemble(finished_store, 10)


class RecordingClient:
    """Stands in for kfp.Client: there is no KFP API server on this machine."""

    calls: list = []

    def __init__(self, fail_with=None):
        self.fail_with, self.experiments = fail_with, []

    def create_run_from_pipeline_func(self, pipeline_func, arguments, run_name, experiment_name, namespace,
                                      service_account):
        if self.fail_with:
            raise self.fail_with
        self.calls.append(("from_func", pipeline_func, arguments, run_name, experiment_name, namespace,
                           service_account))
        return type("Run", (), {"run_id": "run-123"})()

    def create_experiment(self, name, namespace=None):
        self.experiments.append(name)
        return type("Experiment", (), {"experiment_id": "exp-1"})()

    def run_pipeline(self, experiment_id, job_name, pipeline_id, params, service_account):
        self.calls.append(("uploaded", experiment_id, job_name, pipeline_id, params, service_account))
        return type("Run", (), {"run_id": "run-456"})()


def test_submit_passes_the_run_settings(monkeypatch):
    client = RecordingClient()
    client.calls = []
    monkeypatch.setattr(runs, "kfp_client", lambda host, namespace: client)
    settings = RunSettings(store="s3://acgan/exp1", dataset="synthetic", num_classes=1000, steps=50_000,
                           classes_per_split=10, split_ids=[3])
    result = runs.submit(settings, cluster=ClusterSettings(parallelism=16), target=KfpTarget(namespace="team-a"),
                         submission=submission("https://kfp.example/pipeline"))
    assert result == {"run_id": "run-123", "host": "https://kfp.example/pipeline", "store": "s3://acgan/exp1"}
    kind, name, arguments, run_name, experiment, namespace, service_account = client.calls[0]
    assert (kind, name.name, experiment, namespace) == ("from_func", "acgan-ensemble", "acgan-ensemble", "team-a")
    assert service_account == "acgan-pipeline"  # the ServiceAccount that manifests/ creates
    assert arguments["steps"] == 50_000 and arguments["split_ids"] == [3] and arguments["source"] == ""
    runs.submit(settings, cluster=ClusterSettings(), target=KfpTarget(pipeline_id="pl-9"),
                submission=submission("https://kfp.example/pipeline"))
    assert client.calls[1][:4] == ("uploaded", "exp-1", "acgan-ensemble s3://acgan/exp1", "pl-9")
    runs.submit(settings, cluster=ClusterSettings(), target=KfpTarget(service_account=None),
                submission=submission("https://kfp.example/pipeline"))
    assert client.calls[2][-1] is None  # KFP's default ServiceAccount


def test_submit_errors_are_one_line(monkeypatch):
    from kfp_server_api.exceptions import ApiException

    monkeypatch.setattr(runs, "kfp_client", lambda host, namespace: RecordingClient(ApiException(status=401)))
    with pytest.raises(UserError, match="rejected the credentials"):
        runs.submit(RunSettings(store="s3://acgan/x"), cluster=ClusterSettings(), target=KfpTarget(),
                    submission=submission("https://kfp.example"))
    with pytest.raises(UserError, match="needs object storage"):
        runs.submit(RunSettings(store="./local"), cluster=ClusterSettings(), target=KfpTarget(),
                    submission=submission("https://kfp.example"))
    RecordingClient.calls.clear()
    monkeypatch.setattr(runs, "kfp_client", lambda host, namespace: RecordingClient())
    with pytest.raises(UserError, match="--analyses: unknown analysis fid: "):  # before anything is submitted
        runs.submit(RunSettings(store="s3://acgan/x", analyses="diversity,fid"), cluster=ClusterSettings(),
                    target=KfpTarget(), submission=submission("https://kfp.example"))
    assert RecordingClient.calls == []


def test_rerun_leaves_a_split_with_a_live_lease_alone(finished_store, tmp_path):
    import time

    for key in finished_store.list("splits/split-00001/checkpoints/"):
        finished_store.delete(key)
    other = Lease(owner="gpu-node-7/1/0abc", expires=time.time() + 600, acquired=time.time(), seconds=600)
    finished_store.write_bytes(lease_key(1), other.model_dump_json().encode())
    assert [s.state for s in split_statuses(finished_store)] == ["complete", "training"]
    with pytest.raises(UserError, match=r"splits 1 \(gpu-node-7/1/0abc\) are being trained now"):
        runs.rerun(finished_store, local=LocalSettings(pipeline_root=tmp_path / "kfp"))
    assert not finished_store.list("splits/split-00001/checkpoints/")  # nothing started


def test_the_reports_open_in_a_real_browser(local_run, tmp_path):
    """report.html and each split's sample page: every image decodes and no script error occurs. The same check
    catches a broken image and a throwing script in a control page."""
    root, _ = local_run
    control = tmp_path / "control.html"
    control.write_text("<!doctype html><html><head></head><body><img src='data:image/png;base64,AAAA'>"
                       "<script>undefinedFunction()</script></body></html>")
    checked = open_in_chromium(control, tmp_path)
    assert checked["loaded"] == 0 and len(checked["errors"]) == 2, checked
    pages = [root / "store" / "eval" / "report.html", *sorted((root / "kfp-local").rglob("samples"))]
    for page in pages:
        checked = open_in_chromium(page, tmp_path)
        assert checked["errors"] == [] and checked["images"] == checked["loaded"] > 0, (page, checked)
