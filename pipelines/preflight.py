"""Before `acgan submit` starts a run: does the namespace where KFP will run its pods hold what they need? KFP says
whether it is multi-user (its healthz); the namespace's objects are asked of the Kubernetes API with the `kubernetes`
client, as the submitting user (kube config, or the pod's service account).

A pod that lacks its Secret or ConfigMap is never started (CreateContainerConfigError) and one labelled for a Kueue
LocalQueue that does not exist waits forever, so each of these would otherwise show up as a stuck run much later.
Only the names of keys are read, never a value. It also reads KFP's Argo configuration, when the submitting user
may, to warn when its retry policy would retry a failing pod at every level of KFP's nested DAGs, or would not retry
a deleted (preempted) pod (docs/operators.md, section 5).
"""

from __future__ import annotations

import logging
import os

import yaml

from acgan.errors import UserError
from acgan.cluster_settings import ClusterSettings
from pipelines.acgan_ensemble import STORE_ENV

STORE_ENDPOINT_KEY = "ACGAN_S3_ENDPOINT"
KUEUE_GROUP, KUEUE_VERSION = "kueue.x-k8s.io", "v1beta2"
GPU_QUOTA_KEY = "requests.nvidia.com/gpu"
KFP_NAMESPACE, ARGO_CONFIG_MAP = "kubeflow", "workflow-controller-configmap"
# Argo's retry policies that retry a Failed node (workflow/controller/operator.go, processNodeRetries). As a
# template default they reach every template, DAGs included (mergedTemplateDefaultsInto).
RETRIES_FAILURES = ("Always", "OnFailure", "OnTransientError")

log = logging.getLogger(__name__)


def pods_namespace(multi_user: bool, namespace: str | None) -> str:
    """The namespace KFP 2.17 runs a run's pods in. Standalone (single-user) KFP runs them in its own namespace
    whatever the run names: backend/src/apiserver at tag 2.17.0, ResourceManager.ReplaceNamespace returns "" unless
    multi-user (resource/resource_manager.go), experiment_server.go createExperiment stores an experiment's namespace
    through it, a run takes its experiment's (GetValidExperimentNamespacePair), and CreateRun falls back to
    common.GetPodNamespace(), the API server's own namespace, `kubeflow` on every install of its manifests.
    Multi-user KFP runs them in the run's profile namespace, which it requires. A namespace that KFP would not run
    the pods in is refused, naming where they would run."""
    if multi_user:
        if not namespace:
            raise UserError("preflight: this KFP is multi-user and runs a run's pods in the user's profile "
                            "namespace: pass --namespace PROFILE (manifests/overlays/kubeflow-profile applied there)")
        return namespace
    if namespace and namespace != KFP_NAMESPACE:
        raise UserError(f"--namespace {namespace}: standalone (single-user) KFP runs every pod in its own namespace, "
                        f"{KFP_NAMESPACE}, whatever namespace a run names; drop --namespace "
                        "(manifests/overlays/standalone puts what the pods need there)")
    return KFP_NAMESPACE


def kfp_pods_namespace(client, host: str, namespace: str | None) -> str:
    """pods_namespace for the KFP server `client` reaches: its healthz answer says whether it is multi-user
    (backend/src/apiserver/main.go, multi_user); a multi-user run without --namespace goes to the kfp context's
    namespace, as kfp.Client's calls do (get_user_namespace)."""
    try:
        # kfp.Client.get_kfp_healthz would log a traceback for each of its five attempts: one request instead.
        multi_user = bool(client._healthz_api.healthz_service_get_healthz().multi_user)
    except Exception as e:  # noqa: BLE001 - any failure to ask is the same one line
        status = getattr(e, "status", None)
        raise UserError(f"preflight: KFP at {host} did not say whether it is multi-user ("
                        f"{f'HTTP {status}' if status else type(e).__name__}): check --host and the credentials, "
                        "or pass --no-preflight") from None
    return pods_namespace(multi_user, namespace or (client.get_user_namespace() if multi_user else None))


def kubernetes_api_client():
    """An ApiClient from the pod's service account inside a cluster, else the kube config's current context."""
    from kubernetes import client, config

    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
        return client.ApiClient()
    try:
        # KUBECONFIG read now: the kubernetes package reads it once, when first imported.
        configuration = client.Configuration()
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG", "~/.kube/config"),
                                client_configuration=configuration)
    except (config.ConfigException, OSError) as e:
        raise UserError(f"preflight: no kube config to reach the Kubernetes API ({e}); set KUBECONFIG, or pass "
                        "--no-preflight") from None
    return client.ApiClient(configuration)


def missing_objects(cluster: ClusterSettings, namespace: str, require_gpu_quota: bool, api_client) -> list[str]:
    """What the namespace lacks for the compiled pipeline, one phrase each; empty when nothing is missing."""
    from kubernetes import client

    core = client.CoreV1Api(api_client)
    missing = []
    secret = _read(lambda: core.read_namespaced_secret(cluster.store_secret, namespace), "Secret",
                   cluster.store_secret)
    if secret is None:
        missing.append(f"Secret {cluster.store_secret}")
    else:
        absent = sorted(set(STORE_ENV) - set(secret.data or {}) - set(secret.string_data or {}))
        missing += [f"key {key} in Secret {cluster.store_secret}" for key in absent]
    config_map = _read(lambda: core.read_namespaced_config_map(cluster.store_config_map, namespace), "ConfigMap",
                       cluster.store_config_map)
    if config_map is None:
        missing.append(f"ConfigMap {cluster.store_config_map}")
    elif STORE_ENDPOINT_KEY not in (config_map.data or {}):
        missing.append(f"key {STORE_ENDPOINT_KEY} in ConfigMap {cluster.store_config_map}")
    if cluster.kueue_queue:
        custom = client.CustomObjectsApi(api_client)
        queue = _read(lambda: custom.get_namespaced_custom_object(KUEUE_GROUP, KUEUE_VERSION, namespace,
                                                                  "localqueues", cluster.kueue_queue),
                      "LocalQueue", cluster.kueue_queue)
        if queue is None:
            missing.append(f"Kueue LocalQueue {cluster.kueue_queue} ({KUEUE_GROUP}/{KUEUE_VERSION})")
    if require_gpu_quota:
        quotas = _read(lambda: core.list_namespaced_resource_quota(namespace), "ResourceQuota list", "")
        gpus = [int(q.spec.hard[GPU_QUOTA_KEY]) for q in (quotas.items if quotas else [])
                if q.spec and q.spec.hard and GPU_QUOTA_KEY in q.spec.hard]
        if not gpus or min(gpus) < cluster.gpus_per_task:
            missing.append(f"a ResourceQuota with {GPU_QUOTA_KEY} >= {cluster.gpus_per_task}"
                           + (f" (the tightest allows {min(gpus)})" if gpus else ""))
    return missing


def argo_retry_gap(api_client) -> str | None:
    """A warning when KFP's Argo configuration retries in a way a run pays for: a template default that retries
    failed nodes applies to KFP's nested DAG templates too, so one failing pod is retried at each level (and a retry
    at the loop's level reruns every split); no template default leaves a deleted (preempted) pod unretried. None for
    KFP 2.17.0's own OnError, and when the submitting user may not read the configuration (nothing is known)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        config_map = client.CoreV1Api(api_client).read_namespaced_config_map(ARGO_CONFIG_MAP, KFP_NAMESPACE)
    except (ApiException, HTTPError):
        return None
    try:
        defaults = yaml.safe_load((config_map.data or {}).get("workflowDefaults") or "{}") or {}
        strategy = defaults["spec"]["templateDefaults"]["retryStrategy"]
        policy = strategy.get("retryPolicy") or ("Always" if strategy.get("expression") else "OnFailure")
    except (yaml.YAMLError, KeyError, TypeError, AttributeError):
        policy = None
    where = f"{KFP_NAMESPACE}/{ARGO_CONFIG_MAP}"
    if policy is None:
        return (f"preflight: KFP's Argo configuration ({where}) sets no template retry policy, so a deleted "
                "(preempted) training pod is not retried and its split waits for `acgan rerun` or a Clone run "
                "(docs/operators.md, section 5)")
    if policy in RETRIES_FAILURES:
        return (f"preflight: KFP's Argo configuration ({where}) retries every template with policy {policy}, KFP's "
                "nested DAGs included: a task that fails is attempted again at each level, and a retry of the "
                "class-splits loop starts every split's pods again (docs/operators.md, section 5)")
    return None


def _read(call, kind: str, name: str):
    """The object, None when the API says it does not exist; any other answer is the one-line error."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        return call()
    except ApiException as e:
        if e.status == 404:
            return None
        raise UserError(f"preflight: reading {kind} {name} failed (HTTP {e.status} {e.reason}): grant the "
                        "submitting user `get` on it, or pass --no-preflight") from None
    except HTTPError as e:
        raise UserError(f"preflight: the Kubernetes API is unreachable ({type(e).__name__}): check your kube "
                        "config, or pass --no-preflight") from None


def preflight(cluster: ClusterSettings, namespace: str, require_gpu_quota: bool = False, api_client=None) -> None:
    """Raises UserError naming, in one line, everything the namespace lacks."""
    api_client = api_client or kubernetes_api_client()
    missing = missing_objects(cluster, namespace, require_gpu_quota, api_client)
    if missing:
        raise UserError(f"preflight: namespace {namespace} lacks {'; '.join(missing)}: apply manifests/ "
                        "(docs/operators.md) or compile with the names your cluster uses; --no-preflight skips this")
    gap = argo_retry_gap(api_client)
    if gap:
        log.warning(gap)
