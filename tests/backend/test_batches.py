"""Runs cut into batches that share one store (pipelines/runs.py): a run too large for one Argo workflow is refused
naming the batch that fits (the ceiling: tests/pipelines/test_workflow_size.py), and a batched submit's runs under the
backend's rules."""

import os

import pytest
import yaml

from acgan.ensemble import load_ensemble
from acgan.errors import UserError
from acgan.cluster_settings import ClusterSettings
from acgan.settings import RunSettings
from acgan.store import open_store
from acgan_cli import main as cli
from pipelines import runs
from pipelines.launch_settings import KfpTarget, SubmitSettings
from pipelines.runs import compile_pipeline
from pipelines.workflow_size import MAX_WORKFLOW_SIZE, size_model
from tests.backend.kfp_backend import Backend
from tests.backend.kfp_pod import run_on_host

SETTINGS = dict(dataset="digits", resolution=32, classes_per_split=5, steps=4, batch_size=8, checkpoint_every=2,
                width=0.0625, samples_per_class=6, pairs=10, classifier_steps=30, analyses=["diversity"])
IMAGENET_1000_SPLITS = dict(dataset="synthetic", num_classes=1000, classes_per_split=1)


def test_a_1000_split_submit_is_refused_before_anything_is_submitted_naming_the_batch_that_fits(monkeypatch,
                                                                                                  tmp_path):
    monkeypatch.setattr(runs, "kfp_client", lambda host, namespace: pytest.fail("nothing may be submitted"))
    settings = RunSettings(store="s3://acgan/imagenet", **IMAGENET_1000_SPLITS)
    with pytest.raises(UserError, match=r"a run of 1000 splits is too large for one Argo workflow: about .* MiB .* "
                                        r"`--batch (\d+)`") as refused:
        runs.submit(settings, cluster=ClusterSettings(), target=KfpTarget(),
                    submission=SubmitSettings(host="https://kfp.example/pipeline", preflight=False))
    batch = int(str(refused.value).rsplit("--batch ", 1)[1].split("`")[0])
    spec, platform = yaml.safe_load_all(compile_pipeline(ClusterSettings(), tmp_path / "p.yaml").read_text())
    fixed, per_split = size_model(spec, platform, passes=2)  # the first pass and one heal pass over every split
    assert fixed + per_split * batch <= MAX_WORKFLOW_SIZE < fixed + per_split * (batch + 1)
    assert 100 < batch < 1000


def test_the_refusal_is_one_line_and_exit_status_2(capsys):
    assert cli.main(["submit", "--host", "https://kfp.example/pipeline", "--store", "s3://acgan/imagenet",
                     "--dataset", "synthetic", "--num-classes", "1000", "--classes-per-split", "1",
                     "--no-preflight"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("acgan submit: error:")]
    assert len(err) == 1 and "`--batch " in err[0]


class EmulatedKFP:
    """kfp.Client for `acgan submit`: each run it is given is compiled and run to its end under the backend's rules
    (tests/backend/kfp_backend.py), its components as processes on this machine."""

    def __init__(self, tmp_path, s3_server):
        self.tmp_path, self.s3, self.runs = tmp_path, s3_server, []

    def create_run_from_pipeline_func(self, pipeline_func, arguments, run_name, experiment_name, namespace,
                                      service_account):
        from kfp import compiler

        work = self.tmp_path / f"run-{len(self.runs)}"
        (work / "logs").mkdir(parents=True)
        compiler.Compiler().compile(pipeline_func, package_path=str(work / "pipeline.yaml"))
        spec, platform = yaml.safe_load_all((work / "pipeline.yaml").read_text())
        cluster = ClusterSettings()
        base_env = {k: v for k, v in os.environ.items()
                    if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "ACGAN_S3_ENDPOINT")}
        backend = Backend(spec, platform, pipeline_root=str(work / "root"), output_parameter_dir=str(work / "out"),
                          execute=run_on_host(work / "logs", base_env),
                          secrets={cluster.store_secret: {"AWS_ACCESS_KEY_ID": self.s3["access_key"],
                                                          "AWS_SECRET_ACCESS_KEY": self.s3["secret_key"]}},
                          config_maps={cluster.store_config_map: {"ACGAN_S3_ENDPOINT": self.s3["endpoint"]}})
        self.runs.append((run_name, arguments["split_ids"], backend.submit(arguments, check=False), backend))
        return type("Run", (), {"run_id": f"run-{len(self.runs)}"})()


def test_a_batched_submit_trains_each_batch_in_its_own_run_and_the_last_assembles_the_whole(
        monkeypatch, tmp_path, s3_server, s3_env):
    kfp = EmulatedKFP(tmp_path, s3_server)
    monkeypatch.setattr(runs, "kfp_client", lambda host, namespace: kfp)
    result = runs.submit(RunSettings(store=s3_env, **SETTINGS), cluster=ClusterSettings(), target=KfpTarget(),
                         submission=SubmitSettings(host="https://kfp.example/pipeline", preflight=False, batch=1))
    assert result["batches"] == [[0], [1]] and result["run_ids"] == ["run-1", "run-2"]
    (first_name, first_splits, first, run_a), (_, second_splits, second, run_b) = kfp.runs
    assert first_name.endswith("(splits 0-0)") and (first_splits, second_splits) == ([0], [1])
    assert (first, second) == ("Succeeded", "Succeeded")
    # The first run's splits were complete, the other run's not yet: it assembled nothing and evaluated nothing.
    assert run_a.phase("root/condition-1") == ["Skipped"]
    assert [e.task.rsplit("/", 1)[-1] for e in run_b.executed][-2:] == ["assemble-ensemble", "evaluate-ensemble"]
    store = open_store(s3_env)
    assert sorted(m.class_id for m in load_ensemble(store).classes) == list(range(10))
    assert store.exists("eval/metrics.json")
