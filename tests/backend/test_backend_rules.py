"""The compiled pipeline under the KFP 2.17 backend's rules (tests/backend/kfp_driver.py and kfp_backend.py cite each
one's source), which kfp.local does not apply: the API server's check of a run's parameters, the drivers' resolution
and type check of every task input (loop items, upstream outputs, pipeline parameters), the launcher's executor input
and outputs, and the Secret and ConfigMap keys each pod's environment takes. The components run for real, as
processes."""

import json
import os

import pytest
import yaml
from kfp import compiler, dsl

from acgan.ensemble import load_ensemble
from acgan.experiment import split_statuses
from acgan.cluster_settings import ClusterSettings
from acgan.settings import RunSettings
from acgan.store import open_store
from pipelines.acgan_ensemble import build_pipeline
from pipelines.runs import pipeline_arguments
from tests.backend.kfp_backend import Backend
from tests.backend.kfp_driver import BackendRejected, check_and_convert, validate_run_parameters
from tests.backend.kfp_pod import run_on_host

SETTINGS = dict(dataset="digits", resolution=32, classes_per_split=5, steps=4, batch_size=8, checkpoint_every=2,
                width=0.0625, samples_per_class=6, pairs=10, classifier_steps=30)
STORE_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "ACGAN_S3_ENDPOINT")


def compiled(pipeline, tmp_path) -> tuple[dict, dict]:
    path = tmp_path / "pipeline.yaml"
    compiler.Compiler().compile(pipeline, package_path=str(path))
    docs = list(yaml.safe_load_all(path.read_text()))
    return docs[0], docs[1] if len(docs) > 1 else {}


def backend(spec, platform, tmp_path, **kwargs) -> Backend:
    base_env = {k: v for k, v in os.environ.items() if k not in STORE_ENV}  # the store's settings come from the pod's
    (tmp_path / "logs").mkdir()
    return Backend(spec, platform, pipeline_root=str(tmp_path / "root"), execute=run_on_host(tmp_path / "logs",
                   base_env), output_parameter_dir=str(tmp_path / "kfp-outputs"), **kwargs)


@pytest.mark.parametrize("value, parameter_type, expected", [
    (0, "STRING", "0"), (2.5, "STRING", "2.5"), (True, "STRING", "true"), ([0, 1], "STRING", "[0,1]"),
    (3, "NUMBER_INTEGER", 3), (3, "NUMBER_DOUBLE", 3), ([], "LIST", []), ({"a": 1}, "STRUCT", {"a": 1}),
])
def test_what_the_driver_accepts_and_how_a_string_input_takes_any_value(value, parameter_type, expected):
    component = {"inputDefinitions": {"parameters": {"x": {"parameterType": parameter_type}}}}
    assert check_and_convert(component, {"x": value}) == {"x": expected}


@pytest.mark.parametrize("value, parameter_type, got", [
    ("0", "NUMBER_INTEGER", "string"), (1, "BOOLEAN", "number"), ("[]", "LIST", "string"), ([1], "STRUCT", "list"),
])
def test_what_the_driver_rejects(value, parameter_type, got):
    component = {"inputDefinitions": {"parameters": {"x": {"parameterType": parameter_type}}}}
    with pytest.raises(BackendRejected, match=f'input parameter "x" type mismatch: expect {parameter_type}, got {got}'):
        check_and_convert(component, {"x": value})


@dsl.component(install_kfp_package=False)
def untyped_plan() -> list:
    return [0, 1]


@dsl.component(install_kfp_package=False)
def use_split(split: int) -> int:
    return split


@dsl.pipeline
def untyped_loop():
    plan = untyped_plan()
    with dsl.ParallelFor(plan.output) as split:
        use_split(split=split)


def test_a_loop_over_an_untyped_list_fails_its_first_iteration_as_the_driver_fails_it(tmp_path):
    """The defect the first cluster run would have met: `-> list` makes the loop item STRING, the iteration driver
    turns the number 0 into "0", and the container driver refuses it for an int input. kfp.local runs it."""
    spec, platform = compiled(untyped_loop, tmp_path)
    assert spec["components"]["comp-for-loop-1"]["inputDefinitions"]["parameters"][
        "pipelinechannel--untyped-plan-Output-loop-item"]["parameterType"] == "STRING"
    run = backend(spec, platform, tmp_path)
    with pytest.raises(BackendRejected, match='input parameter "split" type mismatch: expect NUMBER_INTEGER, got string'):
        run.submit({})
    assert [e.task for e in run.executed] == ["root/untyped-plan"]  # the plan ran; no iteration's task started


@dsl.component(install_kfp_package=False)
def empty_plan() -> list[int]:
    return []


@dsl.component(install_kfp_package=False)
def gather(splits: list) -> int:
    return len(splits)


@dsl.pipeline
def empty_loop():
    plan = empty_plan()
    with dsl.ParallelFor(plan.output) as split:
        used = use_split(split=split)
    gather(splits=dsl.Collected(used.output))


def test_a_loop_with_no_iteration_leaves_nothing_to_collect(tmp_path):
    """Why the plan never returns an empty list (acgan/experiment.py, prepare_experiment): the assembly's driver
    could not resolve its collected input."""
    spec, platform = compiled(empty_loop, tmp_path)
    run = backend(spec, platform, tmp_path)
    with pytest.raises(BackendRejected, match="producer task, for-loop-1, has no output parameter"):
        run.submit({})
    assert [e.task for e in run.executed] == ["root/empty-plan"]


def test_a_run_parameter_of_the_wrong_kind_is_refused_at_submission(tmp_path):
    spec, _ = compiled(build_pipeline(ClusterSettings()), tmp_path)
    arguments = pipeline_arguments(RunSettings(store="s3://b/x", **SETTINGS))
    validate_run_parameters(spec["root"], arguments)
    with pytest.raises(BackendRejected, match="input parameter steps requires type double or integer, but the "
                                              "parameter value is not of number value type"):
        validate_run_parameters(spec["root"], {**arguments, "steps": "4"})


def test_the_pipeline_runs_end_to_end_under_the_backends_rules(s3_server, s3_env, tmp_path):
    """Every task of the real pipeline, as the backend would drive it: a run submitted with what `acgan submit`
    sends, each input resolved and type-checked by the driver's rules, each component started with the compiled
    command and an executor input as the driver writes it, its outputs read as the launcher reads them, the store's
    endpoint and keys only from the Secret and ConfigMap the compiled spec names."""
    cluster = ClusterSettings()
    spec, platform = compiled(build_pipeline(cluster), tmp_path)
    run = backend(spec, platform, tmp_path,
                  secrets={cluster.store_secret: {"AWS_ACCESS_KEY_ID": s3_server["access_key"],
                                                  "AWS_SECRET_ACCESS_KEY": s3_server["secret_key"]}},
                  config_maps={cluster.store_config_map: {"ACGAN_S3_ENDPOINT": s3_server["endpoint"]}})
    # The joint analysis' thresholds and the real images per class: run settings too, an optional number a string.
    evaluation = dict(real_per_class=150, ms_ssim_threshold=0.9, accuracy_threshold=0.05)
    run.submit(pipeline_arguments(RunSettings(store=s3_env, **SETTINGS, **evaluation)))
    tasks = [e.task.rsplit("/", 1)[-1] for e in run.executed]
    assert tasks == ["prepare-data", "prepare-split-data", "train-split", "prepare-split-data", "train-split",
                     "unfinished-splits", "assemble-ensemble", "evaluate-ensemble"]
    assert run.phase("root/heal-1/condition-1") == ["Skipped"]  # every split trained: the heal stage ends there
    splits = [e.executor_input["inputs"]["parameterValues"]["split"] for e in run.executed
              if e.task.endswith("train-split")]
    assert splits == [0, 1]  # numbers all the way: loop item, prepare-split-data's output, train-split's input
    store = open_store(s3_env)
    assert [(s.state, s.step) for s in split_statuses(store)] == [("complete", 4), ("complete", 4)]
    assert sorted(m.class_id for m in load_ensemble(store).classes) == list(range(10))
    pods = {e.task.rsplit("/", 1)[-1]: e.pod for e in run.executed}
    assert_pods_as_compiled(pods, cluster)
    computed_on = json.loads(store.read_bytes("eval/metrics.json"))["computed_on"]
    assert computed_on["joint_thresholds"] == {"ms_ssim": 0.9, "accuracy": 0.05, "ms_ssim_is_real_max": False}
    assert computed_on["real_per_class_at_most"] == 150


def assert_pods_as_compiled(pods: dict[str, dict], cluster: ClusterSettings) -> None:
    """What reached each pod from the compiled spec (tests/backend/kfp_pod.py, pod_settings): the GPU tasks a GPU limit,
    the GPU pool's node selector and toleration, the time limit, the Kueue-free labels and Karpenter's annotation;
    the CPU tasks none of these; every pod the compiler's hardened security context, under which each component
    ran (run_on_host: no new privileges)."""
    for name in ("train-split", "evaluate-ensemble"):
        pod = pods[name]
        assert pod["resources"]["limits"] == {"nvidia.com/gpu": str(cluster.gpus_per_task)}, name
        assert pod["resources"]["requests"] == {"cpu": cluster.train_cpu, "memory": cluster.train_memory}, name
        assert pod["nodeSelector"] == cluster.node_selector, name
        assert pod["tolerations"] == [{"key": cluster.gpu_toleration, "operator": "Exists", "effect": "NoSchedule"}]
        assert pod["activeDeadlineSeconds"] == cluster.timeout_seconds, name
        assert pod["labels"] == {"acgan.ai/store-access": "true"}, name
        assert pod["annotations"] == {"karpenter.sh/do-not-disrupt": "true"}, name
    for name in ("prepare-data", "prepare-split-data", "unfinished-splits", "assemble-ensemble"):
        pod = pods[name]
        assert "nvidia.com/gpu" not in pod["resources"]["limits"] and not pod["nodeSelector"], name
        assert not pod["tolerations"] and "activeDeadlineSeconds" not in pod and not pod["annotations"], name
        assert pod["labels"] == {"acgan.ai/store-access": "true"}, name
    for name, pod in pods.items():
        assert pod["containerSecurityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {
            "drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}, name
        assert pod["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}, name
