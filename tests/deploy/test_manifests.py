"""manifests/: every overlay, alone and with its components, builds with `kubectl kustomize`; every built-in object
validates strictly against the Kubernetes schemas offline; every namespaced object lands in the namespace where KFP
runs the pipeline's pods, which the preflight checks and the docs name; and the compiled pipeline agrees with the
manifests (labels, taint, Secret, ConfigMap, ServiceAccount, quota, Kueue queue)."""

import re
import subprocess

import kubernetes_validate
import pytest
import yaml

from acgan.cluster_settings import ClusterSettings
from pipelines.acgan_ensemble import KUEUE_QUEUE_LABEL, STORE_ACCESS_LABEL
from pipelines.preflight import KFP_NAMESPACE
from pipelines.launch_settings import SERVICE_ACCOUNT
from pipelines.runs import compile_pipeline
from tests.deploy.conftest import (CLUSTER, COMPONENTS, MANIFESTS, OVERLAYS, builds, commented_components, objects,
                                   overlay_namespace)

ROOT = MANIFESTS.parent
K8S_VERSION = "1.32.0"
# Custom resources have no schema in kubernetes-validate; their fields are asserted below instead.
CUSTOM_KINDS = {("karpenter.sh/v1", "NodePool"), ("karpenter.k8s.aws/v1", "EC2NodeClass"),
                ("kueue.x-k8s.io/v1beta2", "ResourceFlavor"), ("kueue.x-k8s.io/v1beta2", "ClusterQueue"),
                ("kueue.x-k8s.io/v1beta2", "LocalQueue"), ("serving.kserve.io/v1beta1", "InferenceService")}
# Cluster-scoped kinds (Karpenter's and Kueue's CRDs declare `scope: Cluster`); everything else is namespaced.
CLUSTER_KINDS = {"Namespace", "ClusterRole", "ClusterRoleBinding", "NodePool", "EC2NodeClass", "ResourceFlavor",
                 "ClusterQueue"}


# Where KFP 2.17 runs a run's pods (backend/src/apiserver at tag 2.17.0): standalone (single-user), in its own
# namespace whatever the run asks (server/experiment_server.go createExperiment stores an experiment's namespace
# through ResourceManager.ReplaceNamespace, "" unless multi-user; a run takes its experiment's namespace in
# resource_manager.go GetValidExperimentNamespacePair, and CreateRun falls back to common.GetPodNamespace(), the API
# server's POD_NAMESPACE, "kubeflow" by default in common/const.go and on every install of its manifests);
# multi-user, in the run's experiment's (profile) namespace.
def pods_run_in(overlay: str) -> str:
    """kubeflow-profile is for multi-user KFP (its namespace: the profile's); any other overlay for standalone KFP."""
    return overlay_namespace(overlay) if overlay == "kubeflow-profile" else KFP_NAMESPACE


def overlay_builds() -> list[str]:
    return [name for name in builds() if not name.startswith("cluster/")]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[dict, dict]:
    cluster = ClusterSettings(kueue_queue="acgan")  # the defaults an operator compiles with, plus the Kueue queue
    path = compile_pipeline(cluster, tmp_path_factory.mktemp("compiled") / "acgan-ensemble.yaml")
    spec, platform = yaml.safe_load_all(path.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_the_layout_an_operator_expects():
    """One overlay for standalone KFP, one for a profile's namespace; every option a component of either (its
    comment offers each one), or, when cluster-scoped, a kustomization of its own."""
    assert OVERLAYS == ["kubeflow-profile", "standalone"]
    assert COMPONENTS == ["bundled-minio", "external-store", "kueue", "serving"]
    assert CLUSTER == ["karpenter", "kueue"]
    for overlay in OVERLAYS:
        assert commented_components(overlay) == ["kueue", "external-store", "bundled-minio", "serving"], overlay


@pytest.mark.parametrize("build", builds())
def test_every_object_validates_strictly(rendered, build):
    docs = rendered[build]
    if not build.startswith("cluster/"):
        assert {"ServiceAccount", "Role", "RoleBinding", "ResourceQuota", "ConfigMap", "Secret"} <= {
            d["kind"] for d in docs}
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS:
            continue
        # Raises ValidationError naming the field, or SchemaNotFoundError for a kind Kubernetes does not have.
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("build", overlay_builds())
def test_every_namespaced_object_lands_where_kfp_runs_the_pods(rendered, build):
    """The ServiceAccount, the Secret and ConfigMap the pods read, the quota that admits them, the LocalQueue they
    are labelled with, MinIO and the InferenceService: all in the namespace of the pods, none anywhere else."""
    docs = rendered[build]
    namespace = pods_run_in(build.split("+")[0])
    for doc in docs:
        if doc["kind"] in CLUSTER_KINDS:
            assert "namespace" not in doc["metadata"], (build, doc["kind"])
        else:
            assert doc["metadata"]["namespace"] == namespace, (build, doc["kind"], doc["metadata"]["name"])
    (binding,) = objects(docs, "RoleBinding").values()
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": namespace}]


@pytest.mark.parametrize("build", [f"cluster/{name}" for name in CLUSTER])
def test_the_cluster_kustomizations_hold_only_cluster_scoped_objects(rendered, build):
    docs = rendered[build]
    assert docs and all(d["kind"] in CLUSTER_KINDS and "namespace" not in d["metadata"] for d in docs)


def test_no_manifest_creates_or_labels_a_namespace_or_changes_what_kfp_owns(rendered):
    """KFP's namespace and a profile's are their owners' (a profile's carries app.kubernetes.io/part-of:
    kubeflow-profile, which KFP's SeaweedFS NetworkPolicy selects on): no Namespace object at all, so nothing
    creates, labels or relabels one. Beside KFP's objects in `kubeflow`, every name is the project's own, and
    nothing touches Argo's cluster-wide configuration: the retries need none (docs/operators.md, section 5)."""
    for build, docs in rendered.items():
        assert not objects(docs, "Namespace"), build
        for doc in docs:
            assert doc["metadata"]["name"].startswith("acgan"), (build, doc["kind"], doc["metadata"]["name"])
    assert not (MANIFESTS / "kfp").exists()


def test_the_preflight_the_overlay_and_the_docs_name_the_same_namespace():
    """The standalone overlay's namespace is where KFP runs the pods and where `acgan submit` looks by default; the
    README's cluster flow and docs/operators.md apply that overlay and name that namespace, and every manifests/
    path they give exists."""
    from pipelines.preflight import pods_namespace

    assert overlay_namespace("standalone") == KFP_NAMESPACE == pods_namespace(False, None)
    readme, operators = (ROOT / "README.md").read_text(), (ROOT / "docs" / "operators.md").read_text()
    assert "kubectl apply -k manifests/overlays/standalone" in readme
    assert "kubectl apply -k manifests/overlays/standalone" in operators
    assert f"`{KFP_NAMESPACE}`" in operators and f"-n {KFP_NAMESPACE} " in operators
    assert "-n acgan" not in readme + operators and "namespace `acgan`" not in operators
    ours = r"manifests/(?:base|overlays|components|cluster)/[\w./-]*[\w/]"  # not KFP's manifests/kustomize/...
    for path in set(re.findall(ours, readme + operators)):
        assert (ROOT / path).exists() or (ROOT / f"{path}.example").exists(), path  # an env file made from its example


def test_no_real_secret_is_committed():
    tracked = subprocess.run(["git", "ls-files", "manifests"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    assert not [f for f in tracked if f.endswith(".env")]
    examples = [f for f in tracked if f.endswith(".env.example")]
    assert len(examples) == 2


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_bundled_minio(rendered, overlay):
    docs = rendered[f"{overlay}+bundled-minio"]
    minio = objects(docs, "StatefulSet")["acgan-minio"]
    pod = minio["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    assert minio["spec"]["volumeClaimTemplates"][0]["spec"]["accessModes"] == ["ReadWriteOnce"]
    root_secret = pod["containers"][0]["envFrom"][0]["secretRef"]["name"]
    assert set(objects(docs, "Secret")[root_secret]["data"]) == {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"}
    service = objects(docs, "Service")["acgan-minio"]
    assert service["spec"]["selector"] == minio["spec"]["template"]["metadata"]["labels"]
    # The endpoint is the Service's short name, which resolves in the pods' own namespace, where the Service is.
    port = service["spec"]["ports"][0]["port"]
    endpoint = objects(docs, "ConfigMap")["acgan-store"]["data"]["ACGAN_S3_ENDPOINT"]
    assert endpoint == f"http://{service['metadata']['name']}:{port}"
    assert service["metadata"]["namespace"] == pods_run_in(overlay)
    job = objects(docs, "Job")["acgan-minio-bucket"]
    script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert "mc mb --ignore-existing acgan/acgan" in script and "policy attach" in script
    # Only labelled pods reach MinIO, and the bucket job carries the label.
    policy = objects(docs, "NetworkPolicy")["acgan-minio"]
    assert policy["spec"]["podSelector"]["matchLabels"] == minio["spec"]["template"]["metadata"]["labels"]
    allowed = policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    assert allowed == dict([STORE_ACCESS_LABEL])
    assert job["spec"]["template"]["metadata"]["labels"].items() >= allowed.items()


@pytest.mark.parametrize("build", overlay_builds())
def test_pipeline_and_manifests_agree(rendered, compiled, build):
    _, executors = compiled
    cluster = ClusterSettings()
    docs = rendered[build]
    secret = objects(docs, "Secret")[cluster.store_secret]
    config = objects(docs, "ConfigMap")[cluster.store_config_map]
    assert SERVICE_ACCOUNT in objects(docs, "ServiceAccount")
    quota = objects(docs, "ResourceQuota")["acgan-gpu"]["spec"]["hard"]["requests.nvidia.com/gpu"]
    assert int(quota) >= cluster.parallelism * cluster.gpus_per_task
    for name, executor in executors.items():
        env = {e["envVar"] for s in executor["secretAsEnv"] if s["secretName"] == cluster.store_secret
               for e in s["keyToEnv"]}
        keys = {e["secretKey"] for s in executor["secretAsEnv"] for e in s["keyToEnv"]}
        assert env and keys <= set(secret["data"]), name
        assert {e["configMapKey"] for c in executor["configMapAsEnv"] for e in c["keyToEnv"]} <= set(config["data"])
        assert executor["podMetadata"]["labels"][STORE_ACCESS_LABEL[0]] == STORE_ACCESS_LABEL[1]
    # By default the store is KFP's own (SeaweedFS's S3 gateway on KFP >= 2.15), and no MinIO is bundled.
    endpoint = config["data"]["ACGAN_S3_ENDPOINT"]
    if "external-store" in build:
        assert endpoint.startswith("https://") and "svc.cluster.local" not in endpoint
    elif "bundled-minio" not in build:
        assert endpoint == "http://seaweedfs.kubeflow.svc.cluster.local:8333"
        assert not objects(docs, "StatefulSet") and not objects(docs, "NetworkPolicy")


def test_gpu_pools_match_the_training_task(rendered, compiled):
    _, executors = compiled
    train = executors["exec-train-split"]
    selector = train["nodeSelector"]["labels"]
    (toleration,) = train["tolerations"]
    # Karpenter creates nodes that the training task selects and tolerates, up to the namespace's quota.
    karpenter = rendered["cluster/karpenter"]
    pool = objects(karpenter, "NodePool")["acgan-gpu"]
    template = pool["spec"]["template"]
    assert template["metadata"]["labels"].items() >= selector.items()
    assert [(t["key"], t["effect"]) for t in template["spec"]["taints"]] == [(toleration["key"], toleration["effect"])]
    node_class = template["spec"]["nodeClassRef"]
    assert node_class["name"] in objects(karpenter, "EC2NodeClass")
    # A pinned AMI: @latest drifts every node (and the tasks on it) to each new release.
    for term in objects(karpenter, "EC2NodeClass")[node_class["name"]]["spec"]["amiSelectorTerms"]:
        assert re.fullmatch(r"al2023@v\d{8}", term["alias"]), term
    # Karpenter leaves nodes whose training pods carry do-not-disrupt alone.
    assert train["podMetadata"]["annotations"] == {"karpenter.sh/do-not-disrupt": "true"}
    assert pool["spec"]["limits"]["nvidia.com/gpu"] == objects(rendered["standalone"], "ResourceQuota")[
        "acgan-gpu"]["spec"]["hard"]["requests.nvidia.com/gpu"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kueue_admits_the_gpu_pods_in_either_namespace(rendered, compiled, overlay):
    """The flavor is the GPU pool; the ClusterQueue admits workloads of any namespace (Kueue's ClusterQueue
    namespaceSelector: {} matches all, null none), reached only through the LocalQueue that lands in the pods'
    namespace; the GPU pods carry that LocalQueue's name."""
    _, executors = compiled
    train = executors["exec-train-split"]
    kueue = rendered["cluster/kueue"]
    (flavor,) = objects(kueue, "ResourceFlavor").values()
    assert flavor["spec"]["nodeLabels"] == train["nodeSelector"]["labels"]
    assert [t["key"] for t in flavor["spec"]["tolerations"]] == [t["key"] for t in train["tolerations"]]
    (cluster_queue,) = objects(kueue, "ClusterQueue").values()
    assert cluster_queue["spec"]["namespaceSelector"] == {}
    (group,) = cluster_queue["spec"]["resourceGroups"]
    assert group["flavors"][0]["name"] == flavor["metadata"]["name"]
    gpu = next(r for r in group["flavors"][0]["resources"] if r["name"] == "nvidia.com/gpu")
    assert int(gpu["nominalQuota"]) >= ClusterSettings().parallelism
    (local_queue,) = objects(rendered[f"{overlay}+kueue"], "LocalQueue").values()
    assert local_queue["metadata"]["namespace"] == pods_run_in(overlay)
    assert local_queue["spec"]["clusterQueue"] == cluster_queue["metadata"]["name"]
    # Only the GPU tasks queue (the flavor is the GPU pool); the CPU steps run outside Kueue.
    for name, executor in executors.items():
        # The heal passes compile their own copies of a task: exec-train-split-2, exec-evaluate-ensemble-2, ...
        gpu = re.fullmatch(r"exec-(train-split|evaluate-ensemble)(-\d+)?", name) is not None
        assert executor["podMetadata"]["labels"].get(KUEUE_QUEUE_LABEL) == (local_queue["metadata"]["name"] if gpu
                                                                             else None), name
    assert all(d["apiVersion"] == "kueue.x-k8s.io/v1beta2" for d in kueue + rendered[f"{overlay}+kueue"]
               if d["apiVersion"].startswith("kueue"))


def test_karpenter_has_nodes_for_the_cpu_tasks(rendered, compiled):
    """The GPU pool is tainted, so the tasks that need no GPU (no toleration, no selector) need a pool of their own,
    whose nodes fit a data task's requests."""
    _, executors = compiled
    karpenter = rendered["cluster/karpenter"]
    cpu_tasks = [e for name, e in executors.items() if "tolerations" not in e]
    assert cpu_tasks and not [e for e in cpu_tasks if "nodeSelector" in e]
    (pool,) = [p for p in objects(karpenter, "NodePool").values() if not p["spec"]["template"]["spec"].get("taints")]
    assert not pool["spec"]["template"].get("metadata", {}).get("labels")
    requirements = {r["key"]: r["values"] for r in pool["spec"]["template"]["spec"]["requirements"]}
    assert min(int(c) for c in requirements["karpenter.k8s.aws/instance-cpu"]) > float(ClusterSettings().prepare_cpu)
    assert pool["spec"]["template"]["spec"]["nodeClassRef"]["name"] in objects(karpenter, "EC2NodeClass")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pipeline_service_account_has_only_what_tasks_need(rendered, overlay):
    docs = rendered[overlay]
    (role,) = objects(docs, "Role").values()
    (binding,) = objects(docs, "RoleBinding").values()
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert not objects(docs, "ClusterRole") and not objects(docs, "ClusterRoleBinding")
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        if "secrets" in rule["resources"] or "configmaps" in rule["resources"]:
            assert rule["verbs"] == ["get"] and rule["resourceNames"]  # by name only, never list
