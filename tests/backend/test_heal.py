"""A run that heals its own preempted splits, under Argo's rules on failure as tests/backend/kfp_backend.py applies
them to the compiled pipeline (a failed iteration fails its loop, what depends on the loop is Omitted, the other
iterations go on; an exit hook runs whatever its task's outcome), with the real components run as processes and a
training pod deleted as a preemption deletes it (tests/backend/kfp_pod.py, preempted: SIGTERM, then SIGKILL after the
grace period)."""

import os

import yaml
from kfp import compiler, dsl

from acgan.ensemble import load_ensemble
from acgan.experiment import split_statuses
from acgan.cluster_settings import ClusterSettings
from acgan.layout import lease_key
from acgan.settings import RunSettings
from acgan.store import open_store
from pipelines.acgan_ensemble import build_pipeline
from pipelines.runs import pipeline_arguments
from tests.backend.kfp_backend import Backend
from tests.backend.kfp_pod import run_on_host

SETTINGS = dict(dataset="digits", resolution=32, classes_per_split=5, steps=4, batch_size=8, checkpoint_every=2,
                width=0.0625, samples_per_class=6, pairs=10, classifier_steps=30)
STORE_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "ACGAN_S3_ENDPOINT")


def compiled(pipeline, tmp_path) -> tuple[dict, dict]:
    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / "pipeline.yaml"
    compiler.Compiler().compile(pipeline, package_path=str(path))
    docs = list(yaml.safe_load_all(path.read_text()))
    return docs[0], docs[1] if len(docs) > 1 else {}


def backend(spec, platform, tmp_path, preempt=None, cluster: ClusterSettings | None = None) -> Backend:
    base_env = {k: v for k, v in os.environ.items() if k not in STORE_ENV}
    (tmp_path / "logs").mkdir(exist_ok=True)
    cluster = cluster or ClusterSettings()
    return Backend(spec, platform, pipeline_root=str(tmp_path / "root"), output_parameter_dir=str(tmp_path / "out"),
                   execute=run_on_host(tmp_path / "logs", base_env, preempt=preempt),
                   secrets={cluster.store_secret: {"AWS_ACCESS_KEY_ID": "unused", "AWS_SECRET_ACCESS_KEY": "unused"}},
                   config_maps={cluster.store_config_map: {"ACGAN_S3_ENDPOINT": "http://unused.invalid"}})


@dsl.component(install_kfp_package=False, base_image="python:3.11")
def plan() -> list[int]:
    return [0, 1, 2]


@dsl.component(install_kfp_package=False, base_image="python:3.11")
def work(item: int) -> int:
    print(f"working on {item}")
    if item == 1:
        raise SystemExit(137)  # the main container's exit code when its pod was SIGKILLed
    return item


@dsl.component(install_kfp_package=False, base_image="python:3.11")
def afterwards():
    print("afterwards")


@dsl.pipeline
def loop_then_dependent():
    items = plan()
    with dsl.ParallelFor(items.output) as item:
        done = work(item=item)
    afterwards().after(done)


@dsl.pipeline
def loop_then_exit_task():
    items = plan()
    with dsl.ParallelFor(items.output) as item:
        done = work(item=item)
    afterwards().after(done).ignore_upstream_failure()


@dsl.pipeline
def loop_body(items: list):
    with dsl.ParallelFor(items) as item:
        work(item=item)


@dsl.pipeline
def sub_dag_then_exit_task():
    items = plan()
    done = loop_body(items=items.output)
    afterwards().after(done).ignore_upstream_failure()


@dsl.component(install_kfp_package=False, base_image="python:3.11")
def no_items() -> list[int]:
    return []


@dsl.pipeline
def count_items(items: list):
    afterwards()


@dsl.pipeline
def driver_failure_then_exit_task():
    plan = no_items()
    with dsl.ParallelFor(plan.output) as item:
        done = work(item=item)
    counted = count_items(items=dsl.Collected(done.output))  # nothing to collect: its DAG driver fails
    afterwards().after(counted).ignore_upstream_failure()


def test_an_exit_hook_does_not_run_when_its_tasks_driver_failed(tmp_path):
    """The hook is on the DAG task, which depends on its driver's success (argocompiler/dag.go, task): a driver that
    fails leaves it Omitted, and its hook with it."""
    spec, platform = compiled(driver_failure_then_exit_task, tmp_path)
    run = backend(spec, platform, tmp_path)
    assert run.submit({}, check=False) == "Failed"
    assert run.phase("/count-items") == ["Failed"] and run.phase("afterwards") == []


def test_a_failed_iteration_fails_the_loop_the_others_run_and_its_dependent_is_omitted(tmp_path):
    spec, platform = compiled(loop_then_dependent, tmp_path)
    run = backend(spec, platform, tmp_path)
    assert run.submit({}, check=False) == "Failed"
    assert run.phase("work") == ["Succeeded", "Failed", "Succeeded"]  # iteration 2 ran after 1 failed
    assert next(n.message for n in run.nodes if n.phase == "Failed").endswith("main: Error (exit code 137)")
    assert run.phase("/for-loop-1") == ["Failed"] and run.phase("/afterwards") == ["Omitted"]


def test_an_exit_task_after_a_loop_is_dropped_by_kfps_compiler_and_runs_after_a_sub_dag(tmp_path):
    """Why the pipeline's passes are DAGs of their own: `ignore_upstream_failure()` after a ParallelFor compiles
    to a hook that the iterator task never takes (argocompiler/dag.go, iteratorTask), so it never runs; after a
    pipeline used as a component it is the DAG task's exit hook, run whatever the pass's outcome."""
    spec, platform = compiled(loop_then_exit_task, tmp_path / "a")
    run = backend(spec, platform, tmp_path / "a")
    assert run.submit({}, check=False) == "Failed"
    assert run.phase("/afterwards") == []
    spec, platform = compiled(sub_dag_then_exit_task, tmp_path / "b")
    run = backend(spec, platform, tmp_path / "b")
    assert run.submit({}, check=False) == "Failed"  # the hook does not change its task's phase
    assert run.phase("/loop-body") == ["Failed"] and run.phase("/afterwards") == ["Succeeded"]
    assert [n.hooked for n in run.nodes if n.path.endswith("/afterwards")] == [True]


def test_the_launcher_tees_each_tasks_output_into_its_executor_logs_artifact(tmp_path):
    """KFP 2.17's API server publishes logs (PUBLISH_LOGS "true"): the driver adds an `executor-logs` output
    artifact to every container task's executor input, which the components must accept, and the launcher writes
    the task's output to it."""
    spec, platform = compiled(loop_then_dependent, tmp_path)
    run = backend(spec, platform, tmp_path)
    run.submit({}, check=False)
    work_runs = [e for e in run.executed if e.task.endswith("/work")]
    logs = work_runs[0].executor_input["outputs"]["artifacts"]["executor-logs"]["artifacts"][0]
    assert logs["uri"].endswith("/executor-logs-0") and logs["type"]["schemaTitle"] == "system.Artifact"
    assert "working on 0" in open(work_runs[0].log_file).read()
    assert run.phase("/plan") == ["Succeeded"]  # a component given the extra artifact still writes its outputs


def preempt_split(split: int, store: str, passes: set[str]):
    """A test for run_on_host: delete the training pod of `split` in the named passes once its trainer holds the
    split's lease (it is training)."""
    def preempt(execution):
        if not execution.task.endswith("/train-split") or execution.task.split("/")[1] not in passes:
            return None
        if execution.executor_input["inputs"]["parameterValues"]["split"] != split:
            return None
        return lambda: os.path.exists(os.path.join(store, lease_key(split)))
    return preempt


def test_a_split_whose_pod_is_preempted_is_trained_again_in_the_same_run_and_the_run_assembles(tmp_path):
    store = str(tmp_path / "store")
    spec, platform = compiled(build_pipeline(ClusterSettings()), tmp_path)
    run = backend(spec, platform, tmp_path, preempt=preempt_split(1, store, {"train-pass"}))
    phase = run.submit(pipeline_arguments(RunSettings(store=store, **SETTINGS, analyses=["diversity"])), check=False)
    assert phase == "Failed"  # the first pass had a Failed pod: Argo keeps that phase for the run
    assert run.phase("root/train-pass/for-loop-1[1]/train-split") == ["Failed"]
    assert run.phase("root/train-pass/for-loop-1[0]/train-split") == ["Succeeded"]
    assert run.phase("root/assemble-ensemble") == ["Omitted"]
    trained = [e.executor_input["inputs"]["parameterValues"]["split"] for e in run.executed
               if e.task.endswith("/train-split")]
    assert trained == [0, 1, 1]  # split 1 again, in the heal pass, and only it
    assert run.phase("/finish/assemble-ensemble") == ["Succeeded"]
    assert run.phase("/finish/condition-1/evaluate-ensemble") == ["Succeeded"]
    assert [(s.state, s.step) for s in split_statuses(open_store(store))] == [("complete", 4), ("complete", 4)]
    assert sorted(m.class_id for m in load_ensemble(open_store(store)).classes) == list(range(10))


def test_a_split_lost_in_every_pass_fails_the_assembly_naming_it(tmp_path):
    store = str(tmp_path / "store")
    spec, platform = compiled(build_pipeline(ClusterSettings()), tmp_path)
    run = backend(spec, platform, tmp_path, preempt=preempt_split(1, store, {"train-pass", "heal-1"}))
    assert run.submit(pipeline_arguments(RunSettings(store=store, **SETTINGS)), check=False) == "Failed"
    assert run.phase("/train-split") == ["Succeeded", "Failed", "Failed"]
    assert run.phase("/finish/assemble-ensemble") == ["Failed"]
    assert run.phase("/finish/condition-1") == ["Omitted"]
    assembly = next(e for e in run.executed if e.task.endswith("/finish/assemble-ensemble"))
    log = open(assembly.log_file).read()
    assert "cannot assemble the ensemble, 1 of 2 splits are not ready (split 1:" in log
