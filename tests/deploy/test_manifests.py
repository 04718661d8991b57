"""manifests/: every overlay builds with `kubectl kustomize`, every built-in object validates strictly against the
Kubernetes schemas offline, and the compiled pipeline agrees with the manifests (labels, taint, Secret, ConfigMap,
ServiceAccount, namespace, quota, Kueue queue)."""

import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from acgan.settings import ClusterSettings
from pipelines.acgan_ensemble import KUEUE_QUEUE_LABEL, STORE_ACCESS_LABEL
from pipelines.runs import SERVICE_ACCOUNT, compile_pipeline

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
OVERLAYS = sorted(p.name for p in (MANIFESTS / "overlays").iterdir())
K8S_VERSION = "1.32.0"
# Custom resources have no schema in kubernetes-validate; their fields are asserted below instead.
CUSTOM_KINDS = {("karpenter.sh/v1", "NodePool"), ("karpenter.k8s.aws/v1", "EC2NodeClass"),
                ("kueue.x-k8s.io/v1beta2", "ResourceFlavor"), ("kueue.x-k8s.io/v1beta2", "ClusterQueue"),
                ("kueue.x-k8s.io/v1beta2", "LocalQueue"), ("serving.kserve.io/v1beta1", "InferenceService")}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, list[dict]]:
    """Each overlay built from a copy of manifests/ whose untracked env files come from the committed examples."""
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is not installed: the README's test command installs it (a kubectl >= 1.27, whose "
                    "kustomize understands `labels`)")
    root = tmp_path_factory.mktemp("manifests") / "manifests"
    shutil.copytree(MANIFESTS, root, ignore=shutil.ignore_patterns("*.env"))
    for example in root.rglob("*.env.example"):
        shutil.copy(example, example.with_suffix(""))
    out = {}
    for overlay in OVERLAYS:
        built = subprocess.run(["kubectl", "kustomize", str(root / "overlays" / overlay)], capture_output=True,
                               text=True, check=False)
        assert built.returncode == 0, f"kubectl kustomize overlays/{overlay}: {built.stderr}"
        out[overlay] = [d for d in yaml.safe_load_all(built.stdout) if d]
    return out


def objects(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[dict, dict]:
    cluster = ClusterSettings(kueue_queue="acgan")  # the defaults an operator compiles with, plus the Kueue queue
    path = compile_pipeline(cluster, tmp_path_factory.mktemp("compiled") / "acgan-ensemble.yaml")
    spec, platform = yaml.safe_load_all(path.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_the_overlays_an_operator_expects():
    assert {"generic", "karpenter", "kueue", "external-store", "bundled-minio", "kubeflow-profile", "serving"} <= set(
        OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_strictly(rendered, overlay):
    docs = rendered[overlay]
    kinds = {d["kind"] for d in docs}
    assert {"ServiceAccount", "Role", "RoleBinding", "ResourceQuota", "ConfigMap", "Secret"} <= kinds
    assert ("Namespace" in kinds) == (overlay != "kubeflow-profile")  # a profile's namespace is the profile's
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS:
            continue
        # Raises ValidationError naming the field, or SchemaNotFoundError for a kind Kubernetes does not have.
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_no_real_secret_is_committed():
    tracked = subprocess.run(["git", "ls-files", "manifests"], cwd=MANIFESTS.parent, capture_output=True, text=True,
                             check=True).stdout.split()
    assert not [f for f in tracked if f.endswith(".env")]
    examples = [f for f in tracked if f.endswith(".env.example")]
    assert len(examples) == 2


def test_bundled_minio(rendered):
    docs = rendered["bundled-minio"]
    minio = objects(docs, "StatefulSet")["acgan-minio"]
    pod = minio["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    assert minio["spec"]["volumeClaimTemplates"][0]["spec"]["accessModes"] == ["ReadWriteOnce"]
    root_secret = pod["containers"][0]["envFrom"][0]["secretRef"]["name"]
    assert set(objects(docs, "Secret")[root_secret]["data"]) == {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"}
    service = objects(docs, "Service")["acgan-minio"]
    assert service["spec"]["selector"] == minio["spec"]["template"]["metadata"]["labels"]
    job = objects(docs, "Job")["acgan-minio-bucket"]
    script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert "mc mb --ignore-existing acgan/acgan" in script and "policy attach" in script
    # Only labelled pods reach MinIO, and the bucket job carries the label.
    policy = objects(docs, "NetworkPolicy")["acgan-minio"]
    assert policy["spec"]["podSelector"]["matchLabels"] == minio["spec"]["template"]["metadata"]["labels"]
    allowed = policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    assert allowed == dict([STORE_ACCESS_LABEL])
    assert job["spec"]["template"]["metadata"]["labels"].items() >= allowed.items()


def test_pipeline_and_manifests_agree(rendered, compiled):
    spec, executors = compiled
    cluster = ClusterSettings()
    for overlay, docs in rendered.items():
        (namespace,) = {d["metadata"]["namespace"] for d in docs if d["kind"] == "ServiceAccount"}
        secret = objects(docs, "Secret")[cluster.store_secret]
        config = objects(docs, "ConfigMap")[cluster.store_config_map]
        assert SERVICE_ACCOUNT in objects(docs, "ServiceAccount"), overlay
        for obj in (secret, config, *objects(docs, "ServiceAccount").values()):
            assert obj["metadata"]["namespace"] == namespace, overlay
        quota = objects(docs, "ResourceQuota")["acgan-gpu"]["spec"]["hard"]["requests.nvidia.com/gpu"]
        assert int(quota) >= cluster.parallelism * cluster.gpus_per_task, overlay
        for name, executor in executors.items():
            env = {e["envVar"] for s in executor["secretAsEnv"] if s["secretName"] == cluster.store_secret
                   for e in s["keyToEnv"]}
            keys = {e["secretKey"] for s in executor["secretAsEnv"] for e in s["keyToEnv"]}
            assert env and keys <= set(secret["data"]), (overlay, name)
            assert {e["configMapKey"] for c in executor["configMapAsEnv"] for e in c["keyToEnv"]} <= set(config["data"])
            assert executor["podMetadata"]["labels"][STORE_ACCESS_LABEL[0]] == STORE_ACCESS_LABEL[1]
    # By default the store is KFP's own (SeaweedFS's S3 gateway on KFP >= 2.15), and no MinIO is bundled.
    endpoint = {name: objects(docs, "ConfigMap")["acgan-store"]["data"]["ACGAN_S3_ENDPOINT"]
                for name, docs in rendered.items()}
    for overlay in ("generic", "karpenter", "kueue"):
        assert endpoint[overlay] == "http://seaweedfs.kubeflow.svc.cluster.local:8333", overlay
    for overlay in ("generic", "karpenter", "kueue", "external-store"):
        assert not objects(rendered[overlay], "StatefulSet") and not objects(rendered[overlay], "NetworkPolicy")
    assert endpoint["external-store"] not in (endpoint["generic"], endpoint["bundled-minio"])
    # The opt-in MinIO's endpoint is its Service, in the manifests' namespace.
    docs = rendered["bundled-minio"]
    (namespace,) = objects(docs, "Namespace")
    port = objects(docs, "Service")["acgan-minio"]["spec"]["ports"][0]["port"]
    assert endpoint["bundled-minio"] == f"http://acgan-minio.{namespace}.svc.cluster.local:{port}"


def test_gpu_pools_match_the_training_task(rendered, compiled):
    _, executors = compiled
    train = executors["exec-train-split"]
    selector = train["nodeSelector"]["labels"]
    (toleration,) = train["tolerations"]
    # Karpenter creates nodes that the training task selects and tolerates, up to the namespace's quota.
    pool = objects(rendered["karpenter"], "NodePool")["acgan-gpu"]
    template = pool["spec"]["template"]
    assert template["metadata"]["labels"].items() >= selector.items()
    assert [(t["key"], t["effect"]) for t in template["spec"]["taints"]] == [(toleration["key"], toleration["effect"])]
    node_class = template["spec"]["nodeClassRef"]
    assert node_class["name"] in objects(rendered["karpenter"], "EC2NodeClass")
    # A pinned AMI: @latest drifts every node (and the tasks on it) to each new release.
    for term in objects(rendered["karpenter"], "EC2NodeClass")[node_class["name"]]["spec"]["amiSelectorTerms"]:
        assert re.fullmatch(r"al2023@v\d{8}", term["alias"]), term
    # Karpenter leaves nodes whose training pods carry do-not-disrupt alone.
    assert train["podMetadata"]["annotations"] == {"karpenter.sh/do-not-disrupt": "true"}
    assert pool["spec"]["limits"]["nvidia.com/gpu"] == objects(rendered["karpenter"], "ResourceQuota")[
        "acgan-gpu"]["spec"]["hard"]["requests.nvidia.com/gpu"]
    # Kueue: the flavor is the same pool, the local queue is the one the pods are labelled with.
    kueue = rendered["kueue"]
    (flavor,) = objects(kueue, "ResourceFlavor").values()
    assert flavor["spec"]["nodeLabels"] == selector
    assert [t["key"] for t in flavor["spec"]["tolerations"]] == [toleration["key"]]
    (cluster_queue,) = objects(kueue, "ClusterQueue").values()
    (group,) = cluster_queue["spec"]["resourceGroups"]
    assert group["flavors"][0]["name"] == flavor["metadata"]["name"]
    gpu = next(r for r in group["flavors"][0]["resources"] if r["name"] == "nvidia.com/gpu")
    assert int(gpu["nominalQuota"]) >= ClusterSettings().parallelism
    (local_queue,) = objects(kueue, "LocalQueue").values()
    (namespace,) = objects(kueue, "Namespace")
    assert local_queue["metadata"]["namespace"] == namespace
    assert local_queue["spec"]["clusterQueue"] == cluster_queue["metadata"]["name"]
    assert cluster_queue["spec"]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": namespace}
    # Only the GPU tasks queue (the flavor is the GPU pool); the CPU steps run outside Kueue.
    for name, executor in executors.items():
        gpu = name in ("exec-train-split", "exec-evaluate-ensemble")
        assert executor["podMetadata"]["labels"].get(KUEUE_QUEUE_LABEL) == (local_queue["metadata"]["name"] if gpu
                                                                             else None), name
    assert all(d["apiVersion"] == "kueue.x-k8s.io/v1beta2" for d in kueue if d["apiVersion"].startswith("kueue"))


def test_karpenter_has_nodes_for_the_cpu_tasks(rendered, compiled):
    """The GPU pool is tainted, so the tasks that need no GPU (no toleration, no selector) need a pool of their own,
    whose nodes fit a data task's requests."""
    _, executors = compiled
    cpu_tasks = [e for name, e in executors.items() if "tolerations" not in e]
    assert cpu_tasks and not [e for e in cpu_tasks if "nodeSelector" in e]
    (pool,) = [p for p in objects(rendered["karpenter"], "NodePool").values() if not p["spec"]["template"]["spec"].get(
        "taints")]
    assert not pool["spec"]["template"].get("metadata", {}).get("labels")
    requirements = {r["key"]: r["values"] for r in pool["spec"]["template"]["spec"]["requirements"]}
    assert min(int(c) for c in requirements["karpenter.k8s.aws/instance-cpu"]) > float(ClusterSettings().prepare_cpu)
    assert pool["spec"]["template"]["spec"]["nodeClassRef"]["name"] in objects(rendered["karpenter"], "EC2NodeClass")


def test_pipeline_service_account_has_only_what_tasks_need(rendered):
    docs = rendered["generic"]
    (role,) = objects(docs, "Role").values()
    (binding,) = objects(docs, "RoleBinding").values()
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT,
                                    "namespace": binding["metadata"]["namespace"]}]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert not objects(docs, "ClusterRole") and not objects(docs, "ClusterRoleBinding")
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        if "secrets" in rule["resources"] or "configmaps" in rule["resources"]:
            assert rule["verbs"] == ["get"] and rule["resourceNames"]  # by name only, never list


def test_no_manifest_changes_what_another_component_owns(rendered):
    """No common label on a Namespace (a Kubeflow profile's carries app.kubernetes.io/part-of: kubeflow-profile,
    which the profile controller and KFP's NetworkPolicies select on), nothing in KFP's namespace, and nothing of
    Argo's cluster-wide configuration: the retries need none (docs/operators.md, section 5)."""
    for overlay, docs in rendered.items():
        for namespace in objects(docs, "Namespace").values():
            assert "app.kubernetes.io/part-of" not in namespace["metadata"].get("labels", {}), overlay
        assert not [d for d in docs if d["metadata"].get("namespace") == "kubeflow"], overlay
        assert "workflow-controller-configmap" not in objects(docs, "ConfigMap"), overlay
    assert not (MANIFESTS / "kfp").exists()


def test_the_profile_overlay_applies_no_namespace(rendered):
    docs = rendered["kubeflow-profile"]
    assert not objects(docs, "Namespace")
    namespaces = {d["metadata"]["namespace"] for d in docs}
    (binding,) = objects(docs, "RoleBinding").values()
    assert namespaces == {binding["subjects"][0]["namespace"]} and namespaces != {"acgan"}


# KServe's InferenceService CRD as kserve/kserve publishes it (config/crd/full/serving.kserve.io_inferenceservices.yaml
# at tag v0.20.0; the same bytes at the newest commit we could read, aaac4e2 of 2026-08-21, before the 0.21.0 tag),
# vendored gzipped: the schema the cluster's API server checks an InferenceService against.
KSERVE_CRD = Path(__file__).parent / "schemas" / "serving.kserve.io_inferenceservices.yaml.gz"
KSERVE_CRD_SHA256 = "57c3bf13f77de94678bf2ae3748056ec071ad2b9e88d6a28f44fb4710758fcff"


def closed(schema):
    """A CRD's structural schema with unknown fields rejected where it lists the fields (what `kubectl apply`'s
    strict field validation does; the API server would otherwise drop them silently)."""
    if isinstance(schema, list):
        return [closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: closed(v) if k != "properties" else {name: closed(s) for name, s in v.items()} for k, v in schema.items()}
    listed = "properties" in out and "additionalProperties" not in out
    if listed and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


@pytest.fixture(scope="module")
def inference_service_validator():
    import gzip
    import hashlib

    import jsonschema

    raw = gzip.decompress(KSERVE_CRD.read_bytes())
    assert hashlib.sha256(raw).hexdigest() == KSERVE_CRD_SHA256  # the file as published
    crd = yaml.load(raw, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (version,) = crd["spec"]["versions"]
    assert (crd["spec"]["group"], version["name"], crd["spec"]["names"]["kind"]) == (
        "serving.kserve.io", "v1beta1", "InferenceService")
    return jsonschema.Draft4Validator(closed(version["schema"]["openAPIV3Schema"]))


def test_the_inference_service_validates_against_kserves_schema(rendered, inference_service_validator):
    (service,) = objects(rendered["serving"], "InferenceService").values()
    inference_service_validator.validate(service)
    # The check itself: a misspelt field and a wrong type are refused.
    misspelt = yaml.safe_load(yaml.safe_dump(service))
    misspelt["spec"]["predictor"]["containers"][0]["readinessprobe"] = {}
    wrong = yaml.safe_load(yaml.safe_dump(service))
    wrong["spec"]["predictor"]["minReplicas"] = "one"
    for bad in (misspelt, wrong):
        assert not inference_service_validator.is_valid(bad)


def test_the_inference_service_runs_acgan_serve_beside_the_pipeline(rendered, compiled):
    """Standard mode; `acgan serve` in the project's image with arguments our CLI accepts, listening where the
    probes and the Service look; the store's Secret and ConfigMap the pipeline uses; the GPU pool the training task
    selects and tolerates; a GPU the namespace's quota leaves room for beside a full run."""
    from acgan.settings import ServeSettings
    from acgan_cli.main import build_parser

    _, executors = compiled
    cluster = ClusterSettings()
    docs = rendered["serving"]
    (namespace,) = objects(docs, "Namespace")
    (service,) = objects(docs, "InferenceService").values()
    assert service["metadata"]["namespace"] == namespace
    assert service["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    predictor = service["spec"]["predictor"]
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container" and container["image"] == cluster.image
    args = build_parser().parse_args(container["args"])
    settings = ServeSettings.model_validate({k: v for k, v in vars(args).items()
                                             if k in ServeSettings.model_fields and v is not None})
    assert settings.store.startswith("s3://") and settings.host == "0.0.0.0" and settings.device == "cuda"
    (port,) = container["ports"]
    assert port["containerPort"] == settings.port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == settings.port
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    sources = {next(iter(s)): s[next(iter(s))]["name"] for s in container["envFrom"]}
    assert sources == {"secretRef": cluster.store_secret, "configMapRef": cluster.store_config_map}
    assert set(objects(docs, "Secret")[cluster.store_secret]["data"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert "ACGAN_S3_ENDPOINT" in objects(docs, "ConfigMap")[cluster.store_config_map]["data"]
    train = executors["exec-train-split"]
    assert predictor["nodeSelector"] == train["nodeSelector"]["labels"]
    assert [(t["key"], t["operator"], t["effect"]) for t in predictor["tolerations"]] == [
        (t["key"], t["operator"], t["effect"]) for t in train["tolerations"]]
    assert predictor["labels"][STORE_ACCESS_LABEL[0]] == STORE_ACCESS_LABEL[1]
    gpus = container["resources"]["requests"]["nvidia.com/gpu"]
    assert gpus == container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    quota = int(objects(docs, "ResourceQuota")["acgan-gpu"]["spec"]["hard"]["requests.nvidia.com/gpu"])
    assert quota >= cluster.parallelism * cluster.gpus_per_task + predictor["maxReplicas"] * int(gpus)
    assert predictor["securityContext"]["runAsNonRoot"] and not container["securityContext"]["allowPrivilegeEscalation"]
