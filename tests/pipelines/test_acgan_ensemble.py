"""Compile the pipeline and assert on the compiled spec; it must load with kfp's own loader. The ImageNet path at
small scale: a class-folder tree under an S3 prefix of the S3-protocol test server, a real kfp.local run that plans
from the listing, prepares each split's shard inside the fan-out and assembles the ensemble."""

import pytest
import yaml

from acgan.cluster_settings import ClusterSettings
from acgan.data.prepare import load_shard, shard_info
from acgan.ensemble import load_ensemble
from acgan.settings import EvaluationSettings, RunSettings
from acgan.store import open_store
from components.evaluate_ensemble import evaluate_ensemble
from pipelines import runs
from pipelines.launch_settings import LocalSettings
from pipelines.runs import compile_pipeline
from tests.data.test_sources import image_tree

CLASSES = [f"n{c:02d}" for c in (6, 1, 5, 2, 4, 3)]  # uploaded out of order: the class index is the sorted name


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """Compiled once for the module's tests, which only read it."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "compile-time-secret-value")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "compile-time-access-key")
        cluster = ClusterSettings(image="registry.example.com/ml/acgan-ensemble:1.2.3", parallelism=7,
                                  node_selector={"cloud.google.com/gke-nodepool": "h100-pool"},
                                  gpu_toleration="nvidia.com/gpu", timeout_seconds=7200)
        path = compile_pipeline(cluster, tmp_path_factory.mktemp("compiled") / "acgan-ensemble.yaml")
    docs = list(yaml.safe_load_all(path.read_text()))
    return path, docs[0], docs[1]


def test_fan_out_over_splits_with_parallelism(compiled):
    """The first pass of training is a DAG of its own (pipelines/acgan_ensemble.py, train_pass), which the heal
    stage follows as its exit task; the root's assembly runs when the pass succeeded."""
    _, spec, _ = compiled
    tasks = spec["root"]["dag"]["tasks"]
    assert tasks["train-pass"]["inputs"]["parameters"]["splits"]["taskOutputParameter"]["producerTask"] == \
        "prepare-data"
    assert tasks["heal-1"]["triggerPolicy"] == {"strategy": "ALL_UPSTREAM_TASKS_COMPLETED"}
    assert tasks["heal-1"]["dependentTasks"] == ["train-pass"]
    pass_tasks = spec["components"][tasks["train-pass"]["componentRef"]["name"]]["dag"]["tasks"]
    loop_key, loop = next((k, t) for k, t in pass_tasks.items() if "parameterIterator" in t)
    assert loop["taskInfo"]["name"] == "class-splits"
    assert loop["iteratorPolicy"]["parallelismLimit"] == 7
    assert loop["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--splits"
    assert tasks["assemble-ensemble"]["dependentTasks"] == ["prepare-data", "train-pass"]
    # The evaluation when the assembly made the whole ensemble (a batch run may leave that to another run).
    assert tasks["condition-1"]["dependentTasks"] == ["assemble-ensemble"]
    assert tasks["condition-1"]["triggerPolicy"]["condition"] == \
        "inputs.parameter_values['pipelinechannel--assemble-ensemble-whole'] == true"
    gated = spec["components"][tasks["condition-1"]["componentRef"]["name"]]["dag"]["tasks"]
    assert gated["evaluate-ensemble"]["inputs"]["parameters"]["ensemble"]["componentInputParameter"] == \
        "pipelinechannel--assemble-ensemble-ensemble"
    assert gated["evaluate-ensemble"]["taskInfo"]["name"] == "Evaluate the ensemble"
    names = {t["taskInfo"]["name"] for t in tasks.values()}
    assert {"Plan the class splits", "Train the class splits", "Assemble the ensemble"} <= names
    names |= {t["taskInfo"]["name"] for t in pass_tasks.values()}
    inner = spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    # Each split's data is prepared by its own task inside the fan-out; its training waits for it.
    assert inner["prepare-split-data"]["taskInfo"]["name"] == "Prepare one split's data"
    assert inner["train-split"]["taskInfo"]["name"] == "Train one class split"
    assert inner["train-split"]["dependentTasks"] == ["prepare-split-data"]
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == set(RunSettings.model_fields)  # every run setting can be changed from the KFP UI


def test_every_parameter_has_its_settings_description(compiled):
    """The KFP UI's submit form explains each parameter with the description `acgan` validates it with."""
    _, spec, _ = compiled
    params = spec["root"]["inputDefinitions"]["parameters"]
    for name, field in RunSettings.model_fields.items():
        assert field.description, f"RunSettings.{name} has no description"
        assert " ".join(params[name]["description"].split()) == field.description, name


def test_the_evaluation_settings_are_parameters_and_reach_the_evaluation_through_the_store(compiled):
    """Each EvaluationSettings field is a pipeline parameter with its description (`analyses` a list in the KFP UI,
    every analysis by default), given to the plan's task, which records them; the evaluation step reads them from the
    store as the training steps read theirs, so it takes the store and the assembled ensemble only."""
    _, spec, _ = compiled
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["analyses"]["parameterType"] == "LIST"
    assert params["analyses"]["defaultValue"] == []  # every one (acgan/evaluation/analyses.py, chosen_analyses)
    description = EvaluationSettings.model_fields["analyses"].description
    assert " ".join(params["analyses"]["description"].split()) == description
    plan = spec["root"]["dag"]["tasks"]["prepare-data"]["inputs"]["parameters"]
    wired = {name for name, given in plan.items() if given.get("componentInputParameter") == name}
    assert set(EvaluationSettings.model_fields) <= wired
    assert set(evaluate_ensemble.component_spec.inputs) == {"store", "ensemble"}


def test_training_task_kubernetes_settings(compiled):
    _, spec, platform = compiled
    train = spec["deploymentSpec"]["executors"]["exec-train-split"]["container"]
    assert train["image"] == "registry.example.com/ml/acgan-ensemble:1.2.3"
    assert train["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert train["resources"]["accelerator"]["resourceCount"] == "1"
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    train_k8s = k8s["exec-train-split"]
    assert train_k8s["nodeSelector"]["labels"] == {"cloud.google.com/gke-nodepool": "h100-pool"}
    assert train_k8s["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert train_k8s["activeDeadlineSeconds"] == "7200"
    for executor in ("exec-prepare-data", "exec-prepare-split-data", "exec-train-split", "exec-assemble-ensemble",
                     "exec-evaluate-ensemble"):
        secret = k8s[executor]["secretAsEnv"][0]
        assert secret["secretName"] == "acgan-store-credentials"
        assert {e["envVar"] for e in secret["keyToEnv"]} == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
        assert k8s[executor]["configMapAsEnv"][0]["keyToEnv"] == [
            {"configMapKey": "ACGAN_S3_ENDPOINT", "envVar": "ACGAN_S3_ENDPOINT"}]
    assert "nodeSelector" not in k8s["exec-prepare-data"]  # only training needs the GPU pool


def test_every_task_retries_and_training_is_not_disrupted(compiled):
    """Retries on every task, inside the class-splits loop too (the backend's Argo compiler keeps a loop body task's
    retryPolicy: pipelines/acgan_ensemble.py, on_cluster); Karpenter's do-not-disrupt on the GPU tasks only."""
    _, spec, platform = compiled
    cluster = ClusterSettings()
    inner = {k: t for c in spec["components"].values() if "dag" in c for k, t in c["dag"]["tasks"].items()}
    tasks = {**spec["root"]["dag"]["tasks"], **inner}
    for name in ("prepare-data", "train-split", "assemble-ensemble", "evaluate-ensemble"):
        assert tasks[name]["retryPolicy"] == {
            "maxRetryCount": cluster.retries, "backoffDuration": f"{cluster.retry_backoff_seconds}s",
            "backoffFactor": 2.0, "backoffMaxDuration": f"{7200 * (cluster.retries + 1)}s"}, name
    assert "train-split" in spec["components"]["comp-for-loop-1"]["dag"]["tasks"]
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert k8s["exec-train-split"]["podMetadata"]["annotations"] == {"karpenter.sh/do-not-disrupt": "true"}
    assert "annotations" not in k8s["exec-prepare-data"]["podMetadata"]


def test_what_the_ui_shows(compiled, tmp_path):
    """Per split a Metrics artifact and an HTML page (its sample grid); assembly outputs the ensemble manifest;
    evaluation its summary as Metrics and the report as HTML. The assembly reads the store; it takes the run's
    splits from the plan on a cluster, and from the loop's fan-in where a pass is not a DAG of its own (kfp.local's
    `acgan run`, heal_passes 0)."""
    _, spec, _ = compiled
    outputs = {name: {k: v["artifactType"]["schemaTitle"]
                      for k, v in c["outputDefinitions"].get("artifacts", {}).items()}
               for name, c in spec["components"].items() if "outputDefinitions" in c}
    assert outputs["comp-train-split"] == {"metrics": "system.Metrics", "samples": "system.HTML"}
    assert outputs["comp-assemble-ensemble"] == {"manifest": "system.Artifact"}
    assert outputs["comp-evaluate-ensemble"] == {"metrics": "system.Metrics", "report": "system.HTML"}
    fan_in = spec["root"]["dag"]["tasks"]["assemble-ensemble"]["inputs"]["parameters"]["trained_splits"]
    assert fan_in["taskOutputParameter"] == {"producerTask": "prepare-data", "outputParameterKey": "Output"}
    path = compile_pipeline(ClusterSettings(heal_passes=0), tmp_path / "local.yaml")
    local = next(yaml.safe_load_all(path.read_text()))["root"]["dag"]["tasks"]
    fan_in = local["assemble-ensemble"]["inputs"]["parameters"]["trained_splits"]
    assert fan_in["taskOutputParameter"]["outputParameterKey"] == "pipelinechannel--train-split-Output"
    assert not any("triggerPolicy" in t for t in local.values())


def test_training_threads_are_the_tasks_cpu_request_unless_set(compiled, tmp_path):
    """torch's default is a thread per core of the node: on a 96-core GPU node shared by eight tasks, 96 each."""
    _, spec, _ = compiled
    executors = spec["deploymentSpec"]["executors"]
    assert {"name": "OMP_NUM_THREADS", "value": ClusterSettings().train_cpu} in executors["exec-train-split"][
        "container"]["env"]
    assert ClusterSettings(train_cpu="3500m").training_threads == 3 and ClusterSettings(train_cpu="0.5").training_threads == 1
    path = compile_pipeline(ClusterSettings(train_threads=3), tmp_path / "threads.yaml")
    executors = next(yaml.safe_load_all(path.read_text()))["deploymentSpec"]["executors"]
    assert {"name": "OMP_NUM_THREADS", "value": "3"} in executors["exec-train-split"]["container"]["env"]
    assert "env" not in executors["exec-evaluate-ensemble"]["container"]  # only training is pinned


def test_no_runtime_install_and_no_credentials(compiled):
    path, spec, _ = compiled
    text = path.read_text()
    assert "pip install" not in text and "pip3 install" not in text
    assert "compile-time-secret-value" not in text and "compile-time-access-key" not in text
    for executor in spec["deploymentSpec"]["executors"].values():
        assert executor["container"]["image"] == "registry.example.com/ml/acgan-ensemble:1.2.3"


def test_loads_with_kfp_loader(compiled):
    from kfp import components

    path, _, _ = compiled
    loaded = components.load_component_from_file(str(path))
    assert loaded.name == "acgan-ensemble"
    assert "store" in loaded.component_spec.inputs


@pytest.mark.parametrize("settings, message", [
    (dict(image="Not An Image!"), "not an image reference"),
    (dict(node_selector={"bad key!": "x"}), "not a valid Kubernetes label"),
    (dict(parallelism=0), "greater than or equal to 1"),
    (dict(train_cpu="eight"), "not a CPU quantity"), (dict(prepare_cpu="0"), "not a CPU quantity"),
])
def test_bad_cluster_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        ClusterSettings(**settings)


def test_tasks_that_read_the_source_get_cpu_memory_the_volume_and_the_source_secret(compiled, tmp_path):
    _, spec, platform = compiled
    readers = ("exec-prepare-data", "exec-prepare-split-data")
    for executor in readers:
        resources = spec["deploymentSpec"]["executors"][executor]["container"]["resources"]
        assert (resources["resourceCpuRequest"], resources["resourceCpuLimit"]) == ("4", "4")
        assert resources["resourceMemoryRequest"] == "8G"
        assert "pvcMount" not in platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"][executor]
    cluster = ClusterSettings(data_pvc="imagenet:/data", prepare_cpu="16", prepare_memory="24Gi",
                              source_endpoint="https://s3.example.com", source_secret="imagenet-reader")
    path = compile_pipeline(cluster, tmp_path / "pvc.yaml")
    spec, platform = yaml.safe_load_all(path.read_text())
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for executor in readers:
        container = spec["deploymentSpec"]["executors"][executor]["container"]
        assert (container["resources"]["resourceCpuRequest"], container["resources"]["resourceMemoryRequest"]) == (
            "16", "24Gi")
        assert {"name": "ACGAN_SOURCE_S3_ENDPOINT", "value": "https://s3.example.com"} in container["env"]
        assert [(m["constant"], m["mountPath"]) for m in k8s[executor]["pvcMount"]] == [("imagenet", "/data")]
        source_secret = next(s for s in k8s[executor]["secretAsEnv"] if s["secretName"] == "imagenet-reader")
        assert {e["envVar"] for e in source_secret["keyToEnv"]} == {"ACGAN_SOURCE_AWS_ACCESS_KEY_ID",
                                                                   "ACGAN_SOURCE_AWS_SECRET_ACCESS_KEY"}
    for executor in ("exec-train-split", "exec-assemble-ensemble", "exec-evaluate-ensemble"):
        assert "pvcMount" not in k8s[executor]  # only the tasks that read the source mount it


@pytest.mark.parametrize("pvc", ["imagenet", "imagenet:data", "Bad_Name:/data", ":/data"])
def test_a_bad_data_pvc_names_the_flag(pvc):
    with pytest.raises(ValueError, match="--data-pvc .* give NAME:/MOUNT"):
        ClusterSettings(data_pvc=pvc)


def test_compile_with_a_data_pvc_from_the_command_line(tmp_path):
    from acgan_cli.main import main

    out = tmp_path / "p.yaml"
    assert main(["compile", "--image", "registry.example.com/acgan-ensemble:1", "--data-pvc", "imagenet:/data",
                 "--prepare-cpu", "8", "-o", str(out)]) == 0
    spec, platform = yaml.safe_load_all(out.read_text())
    assert platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-prepare-split-data"][
        "pvcMount"][0]["mountPath"] == "/data"
    assert spec["deploymentSpec"]["executors"]["exec-prepare-data"]["container"]["resources"]["resourceCpuLimit"] == "8"


def test_a_store_ca_bundle_is_mounted_in_every_task_and_named_in_ssl_cert_file(compiled, tmp_path):
    """`--store-ca-config-map NAME`: each task mounts the ConfigMap and SSL_CERT_FILE names its ca.crt, the variable
    the store's client reads (tests/store/test_s3.py; the image check reaches an https store this way)."""
    from acgan_cli.main import main

    _, spec, platform = compiled
    for executor, k8s in platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].items():
        assert "configMapAsVolume" not in k8s, executor  # unset: the image's system bundle
        assert "SSL_CERT_FILE" not in str(spec["deploymentSpec"]["executors"][executor]["container"].get("env"))
    out = tmp_path / "ca.yaml"
    assert main(["compile", "--image", "registry.example/acgan:1", "--store-ca-config-map", "store-ca", "-o", str(out)]) == 0
    spec, platform = yaml.safe_load_all(out.read_text())
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(executors) == set(spec["deploymentSpec"]["executors"])
    for executor, k8s in executors.items():
        assert [(v["configMapName"], v["mountPath"]) for v in k8s["configMapAsVolume"]] == [
            ("store-ca", "/etc/acgan/store-ca")], executor
        env = spec["deploymentSpec"]["executors"][executor]["container"]["env"]
        assert {"name": "SSL_CERT_FILE", "value": "/etc/acgan/store-ca/ca.crt"} in env, executor
    assert main(["compile", "--image", "registry.example/acgan:1", "--store-ca-config-map", "Store_CA", "-o", str(out)]) == 2


def test_local_run_from_a_bucket_source_prepares_each_split_in_the_fan_out(s3_env, tmp_path):
    source = f"{s3_env}/imagenet/train"
    bucket = open_store(source)
    for name, data in image_tree(CLASSES, per_class=3).items():
        bucket.write_bytes(name, data)
    settings = RunSettings(store=f"{s3_env}/run", dataset="folder", source=source, classes_per_split=3,
                           resolution=32, steps=2, batch_size=8, checkpoint_every=2, width=0.0625, samples_per_class=4,
                           pairs=3, classifier_steps=20)
    runs.run_local(settings, local=LocalSettings(pipeline_root=tmp_path / "kfp-local"))
    store = open_store(settings.store)
    assert [shard_info(store, s).images for s in (0, 1)] == [{"n01": 4, "n02": 5, "n03": 3},
                                                             {"n04": 3, "n05": 3, "n06": 3}]
    assert shard_info(store, 1).skipped == {} and shard_info(store, 0).skipped == {"n03": 1}
    assert sorted(set(load_shard(store, 1)[1].tolist())) == [3, 4, 5]
    manifest = load_ensemble(store)
    assert [(m.class_id, m.split, m.step) for m in manifest.classes] == [(c, c // 3, 2) for c in range(6)]
    assert store.exists("eval/metrics.json")
