"""KFP's own store admits the pods where they run. KFP 2.17 ships a NetworkPolicy in front of SeaweedFS, its default
object store and ours: `manifests/kustomize/third-party/seaweedfs/base/seaweedfs/seaweedfs-networkpolicy.yaml` at
tag 2.17.0 (in namespace `kubeflow` by that directory's kustomization; env/plain and env/platform-agnostic include
it), vendored byte for byte as tests/deploy/schemas/kfp-2.17.0-seaweedfs-networkpolicy.yaml. Its rules are applied
here with Kubernetes' NetworkPolicy semantics (networking.k8s.io/v1: a policy selects pods of its own namespace; a
peer's podSelector alone means pods of the policy's namespace, a namespaceSelector alone every pod of the selected
namespaces, both together their intersection; no `ports` means every port; an empty selector selects everything) to
the pods each overlay runs: every task of the compiled pipeline and the serving InferenceService's predictor."""

import hashlib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from acgan.cluster_settings import ClusterSettings
from pipelines.runs import compile_pipeline
from tests.deploy.conftest import OVERLAYS, objects, overlay_namespace

POLICY = Path(__file__).parent / "schemas" / "kfp-2.17.0-seaweedfs-networkpolicy.yaml"
POLICY_SHA256 = "61e3d77df26de18162042d36f8314f398c0adacd65e80210f9eca768f55f7513"
POLICY_NAMESPACE = "kubeflow"
# SeaweedFS's pod labels (seaweedfs-deployment.yaml's template at 2.17.0) and its Service's S3 port, whose targetPort
# is the same number (seaweedfs-service.yaml, port http-s3: 8333 -> 8333).
SEAWEEDFS_POD = {"app": "seaweedfs", "application-crd-id": "kubeflow-pipelines"}
SEAWEEDFS_SERVICE, S3_PORT = "seaweedfs.kubeflow.svc.cluster.local", 8333
# The labels each namespace carries: the API server's kubernetes.io/metadata.name on every namespace; on a profile's,
# Kubeflow's profile controller adds app.kubernetes.io/part-of: kubeflow-profile (its namespace-labels.yaml), which
# the overlays leave as they are (tests/deploy/test_manifests.py: no Namespace object in any build).
NAMESPACE_LABELS = {
    "standalone": {"kubernetes.io/metadata.name": "kubeflow"},
    "kubeflow-profile": {"kubernetes.io/metadata.name": overlay_namespace("kubeflow-profile"),
                         "app.kubernetes.io/part-of": "kubeflow-profile"},
}


def selects(selector: dict, labels: dict) -> bool:
    """A metav1.LabelSelector: every matchLabels pair and every matchExpressions requirement holds."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        present, value = e["key"] in labels, labels.get(e["key"])
        held = {"In": present and value in e.get("values", []), "NotIn": not present or value not in e["values"],
                "Exists": present, "DoesNotExist": not present}[e["operator"]]
        if not held:
            return False
    return True


def admitted(policy: dict, policy_namespace: str, target: dict, port: int, source_namespace: str,
             namespace_labels: dict, pod_labels: dict) -> bool:
    """Whether a pod (its namespace, that namespace's labels, its own labels) may open a TCP connection to `port` of
    the `target` pod under this Ingress policy (when the policy selects the target; otherwise it does not apply)."""
    if not selects(policy["spec"]["podSelector"], target):
        return True
    for rule in policy["spec"].get("ingress") or []:
        ports = rule.get("ports") or [{}]
        if not any(p.get("port") in (None, port) and p.get("protocol", "TCP") == "TCP" for p in ports):
            continue
        for peer in rule.get("from") or [{}]:
            if "ipBlock" in peer:
                continue  # a CIDR; pod traffic is matched by the selectors
            ns_ok = (selects(peer["namespaceSelector"], namespace_labels) if "namespaceSelector" in peer
                     else not peer or source_namespace == policy_namespace)
            pod_ok = selects(peer["podSelector"], pod_labels) if "podSelector" in peer else True
            if ns_ok and pod_ok:
                return True
    return False


@pytest.fixture(scope="module")
def seaweedfs_policy() -> dict:
    raw = POLICY.read_bytes()
    assert hashlib.sha256(raw).hexdigest() == POLICY_SHA256  # the file as KFP 2.17.0 ships it
    policy = yaml.safe_load(raw)
    assert (policy["kind"], policy["spec"]["policyTypes"]) == ("NetworkPolicy", ["Ingress"])
    return policy


@pytest.fixture(scope="module")
def task_pod_labels(tmp_path_factory) -> dict[str, dict]:
    """Each compiled task's pod labels (the ones the pipeline sets; KFP and Argo add their own beside them)."""
    path = compile_pipeline(ClusterSettings(kueue_queue="acgan"), tmp_path_factory.mktemp("c") / "p.yaml")
    _, platform = yaml.safe_load_all(path.read_text())
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    return {name: e["podMetadata"]["labels"] for name, e in executors.items()}


def test_the_rules_themselves(seaweedfs_policy):
    """The evaluator against the policy's three rules: a profile namespace and istio-system are admitted, and so is
    any pod of kubeflow; a namespace of our own making (the `acgan` of the earlier manifests) is not."""
    def to_s3(namespace, labels, pod=None):
        return admitted(seaweedfs_policy, POLICY_NAMESPACE, SEAWEEDFS_POD, S3_PORT, namespace,
                        {"kubernetes.io/metadata.name": namespace, **labels}, pod or {})

    assert to_s3("kubeflow", {}) and to_s3("istio-system", {})
    assert to_s3("team-a", {"app.kubernetes.io/part-of": "kubeflow-profile"})
    assert not to_s3("acgan", {}) and not to_s3("acgan", {"app.kubernetes.io/part-of": "acgan-ensemble"})
    assert not to_s3("acgan", {}, {"acgan.ai/store-access": "true"})
    # The port matters for the profile rule: only S3, not the filer or master.
    assert not admitted(seaweedfs_policy, POLICY_NAMESPACE, SEAWEEDFS_POD, 8888, "team-a",
                        {"kubernetes.io/metadata.name": "team-a", "app.kubernetes.io/part-of": "kubeflow-profile"},
                        {})


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_of_each_overlay_reaches_kfps_store(rendered, seaweedfs_policy, task_pod_labels, overlay):
    """The default store is SeaweedFS's S3 port, and every pipeline task and the serving predictor, in the
    namespace where the overlay puts them, with the namespace's own labels and the pods' own, are admitted to it."""
    docs = rendered[f"{overlay}+serving"]
    endpoint = urlsplit(objects(docs, "ConfigMap")["acgan-store"]["data"]["ACGAN_S3_ENDPOINT"])
    assert (endpoint.hostname, endpoint.port) == (SEAWEEDFS_SERVICE, S3_PORT)
    (service,) = objects(docs, "InferenceService").values()
    pods = {**task_pod_labels, "serving predictor": service["spec"]["predictor"]["labels"]}
    namespace = service["metadata"]["namespace"]
    assert namespace == NAMESPACE_LABELS[overlay]["kubernetes.io/metadata.name"]
    for name, labels in pods.items():
        assert admitted(seaweedfs_policy, POLICY_NAMESPACE, SEAWEEDFS_POD, S3_PORT, namespace,
                        NAMESPACE_LABELS[overlay], labels), (overlay, name)
