"""The submit preflight against recorded Kubernetes API server responses: a loopback HTTP server answers the API
paths with the JSON an API server returns, and the real `kubernetes` client reaches it through a kube config."""

import base64

import pytest
import yaml

from acgan_cli.main import main
from acgan.errors import UserError
from acgan.settings import ClusterSettings
from pipelines.preflight import preflight
from tests.conftest import json_api

NS = "acgan"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def recorded_objects() -> dict[str, dict]:
    """What an API server holding manifests/overlays/kueue answers, by path."""
    meta = {"namespace": NS, "uid": "0b7f", "resourceVersion": "812", "creationTimestamp": "2026-11-30T01:00:00Z"}
    return {
        f"/api/v1/namespaces/{NS}/secrets/acgan-store-credentials": {
            "kind": "Secret", "apiVersion": "v1", "type": "Opaque",
            "metadata": {"name": "acgan-store-credentials", **meta},
            "data": {"AWS_ACCESS_KEY_ID": _b64("acgan"), "AWS_SECRET_ACCESS_KEY": _b64("not-a-real-secret")}},
        f"/api/v1/namespaces/{NS}/configmaps/acgan-store": {
            "kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "acgan-store", **meta},
            "data": {"ACGAN_S3_ENDPOINT": "http://acgan-minio.acgan.svc.cluster.local:9000"}},
        f"/apis/kueue.x-k8s.io/v1beta2/namespaces/{NS}/localqueues/acgan": {
            "kind": "LocalQueue", "apiVersion": "kueue.x-k8s.io/v1beta2", "metadata": {"name": "acgan", **meta},
            "spec": {"clusterQueue": "acgan"}, "status": {"pendingWorkloads": 0, "admittedWorkloads": 0}},
        f"/api/v1/namespaces/{NS}/resourcequotas": {
            "kind": "ResourceQuotaList", "apiVersion": "v1", "metadata": {"resourceVersion": "812"},
            "items": [{"metadata": {"name": "acgan-gpu", **meta}, "spec": {"hard": {"requests.nvidia.com/gpu": "16"}},
                       "status": {"hard": {"requests.nvidia.com/gpu": "16"},
                                  "used": {"requests.nvidia.com/gpu": "0"}}}]},
    }


def argo_config(workflow_defaults: str) -> dict:
    return {"kind": "ConfigMap", "apiVersion": "v1",
            "metadata": {"name": "workflow-controller-configmap", "namespace": "kubeflow", "uid": "5c1d",
                         "resourceVersion": "77", "creationTimestamp": "2026-11-30T01:00:00Z"},
            "data": {"executor": "imagePullPolicy: IfNotPresent\n", "workflowDefaults": workflow_defaults}}


ARGO_CONFIG = "/api/v1/namespaces/kubeflow/configmaps/workflow-controller-configmap"
KFP_2_17_DEFAULTS = """spec:
  ttlStrategy:
    secondsAfterCompletion: 3600
  templateDefaults:
    retryStrategy:
      limit: '2'
      retryPolicy: OnError
"""


def _status(code: int, reason: str, path: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": reason,
            "message": f"{path.rsplit('/', 1)[-1]} {reason}", "code": code}


@pytest.fixture
def api_server(tmp_path, monkeypatch):
    """Serves `objects` (path -> JSON; an int answers that status) and records each request's path and token."""
    state = {"objects": recorded_objects(), "requests": []}

    def answer(path, headers):
        path = path.partition("?")[0]
        state["requests"].append((path, headers.get("Authorization")))
        found = state["objects"].get(path)
        if found is None:
            return 404, _status(404, "NotFound", path)
        if isinstance(found, int):
            return found, _status(found, "Forbidden", path)
        return 200, found

    with json_api(answer) as url:
        (tmp_path / "kube-config").write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "c",
            "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
            "clusters": [{"name": "k", "cluster": {"server": url}}],
            "users": [{"name": "u", "user": {"token": "submitter-token"}}]}))
        monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kube-config"))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        yield state


def test_a_namespace_with_everything_passes(api_server):
    preflight(ClusterSettings(kueue_queue="acgan"), NS, require_gpu_quota=True)
    paths = {path for path, _ in api_server["requests"]}
    assert paths == set(recorded_objects()) | {ARGO_CONFIG}  # and KFP's Argo configuration, for a warning only
    assert {auth for _, auth in api_server["requests"]} == {"Bearer submitter-token"}


def test_everything_missing_is_named_in_one_line(api_server):
    objects = api_server["objects"]
    del objects[f"/api/v1/namespaces/{NS}/secrets/acgan-store-credentials"]["data"]["AWS_SECRET_ACCESS_KEY"]
    del objects[f"/api/v1/namespaces/{NS}/configmaps/acgan-store"]
    del objects[f"/apis/kueue.x-k8s.io/v1beta2/namespaces/{NS}/localqueues/acgan"]
    with pytest.raises(UserError) as e:
        preflight(ClusterSettings(kueue_queue="acgan"), NS)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(f"preflight: namespace {NS} lacks key AWS_SECRET_ACCESS_KEY in Secret "
                              "acgan-store-credentials; ConfigMap acgan-store; Kueue LocalQueue acgan "
                              "(kueue.x-k8s.io/v1beta2): apply manifests/")
    assert "not-a-real-secret" not in message and _b64("not-a-real-secret") not in message


def test_gpu_quota_only_when_asked(api_server):
    objects = api_server["objects"]
    objects[f"/api/v1/namespaces/{NS}/resourcequotas"]["items"][0]["spec"]["hard"]["requests.nvidia.com/gpu"] = "1"
    cluster = ClusterSettings(gpus_per_task=2)
    preflight(cluster, NS)  # not asked: the quota is not read
    assert f"/api/v1/namespaces/{NS}/resourcequotas" not in {p for p, _ in api_server["requests"]}
    with pytest.raises(UserError, match=r"lacks a ResourceQuota with requests.nvidia.com/gpu >= 2 \(the tightest "
                                        r"allows 1\)"):
        preflight(cluster, NS, require_gpu_quota=True)
    objects[f"/api/v1/namespaces/{NS}/resourcequotas"]["items"] = []
    with pytest.raises(UserError, match=r"lacks a ResourceQuota with requests.nvidia.com/gpu >= 2:"):
        preflight(cluster, NS, require_gpu_quota=True)


def test_a_forbidden_read_says_so(api_server):
    api_server["objects"][f"/api/v1/namespaces/{NS}/secrets/acgan-store-credentials"] = 403
    with pytest.raises(UserError, match=r"reading Secret acgan-store-credentials failed \(HTTP 403 .*--no-preflight"):
        preflight(ClusterSettings(), NS)


def test_submit_stops_before_kfp_with_one_line(api_server, capsys):
    del api_server["objects"][f"/api/v1/namespaces/{NS}/configmaps/acgan-store"]
    code = main(["submit", "--host", "http://127.0.0.1:9", "--store", "s3://acgan/x", "--namespace", NS])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"acgan submit: error: preflight: namespace {NS} lacks ConfigMap acgan-store" in err


ALWAYS = KFP_2_17_DEFAULTS.replace("OnError", "Always")


@pytest.mark.parametrize("defaults, warned", [
    (ALWAYS, "retries every template with policy Always, KFP's nested DAGs included"),
    (KFP_2_17_DEFAULTS.replace("      retryPolicy: OnError\n", ""), "policy OnFailure"),  # Argo's default policy
    (None, "a deleted (preempted) training pod is not retried"),  # no workflowDefaults (KFP before 2.17.0)
])
def test_argo_retry_policies_that_cost_a_run_are_a_warning(api_server, caplog, defaults, warned):
    api_server["objects"][ARGO_CONFIG] = argo_config(defaults) if defaults else {
        **argo_config(""), "data": {"executor": "imagePullPolicy: IfNotPresent\n"}}
    with caplog.at_level("WARNING", logger="pipelines.preflight"):
        preflight(ClusterSettings(), NS)  # a warning, not a refusal
    [warning] = [r.getMessage() for r in caplog.records]
    assert warned in warning and "docs/operators.md, section 5" in warning, warning


def test_kfps_own_argo_configuration_or_an_unreadable_one_is_silent(api_server, caplog):
    api_server["objects"][ARGO_CONFIG] = argo_config(KFP_2_17_DEFAULTS)
    with caplog.at_level("WARNING", logger="pipelines.preflight"):
        preflight(ClusterSettings(), NS)
        api_server["objects"][ARGO_CONFIG] = 403  # the submitting user may not read KFP's namespace: nothing known
        preflight(ClusterSettings(), NS)
    assert not caplog.records and ARGO_CONFIG in [path for path, _ in api_server["requests"]]


def test_rerun_on_a_cluster_runs_the_same_preflight(api_server, s3_env, capsys):
    from acgan.experiment import prepare_experiment
    from acgan.settings import RunSettings

    prepare_experiment(RunSettings(store=s3_env, steps=4))
    del api_server["objects"][f"/api/v1/namespaces/{NS}/configmaps/acgan-store"]
    code = main(["rerun", "--host", "http://127.0.0.1:9", "--store", s3_env, "--namespace", NS])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"acgan rerun: error: preflight: namespace {NS} lacks ConfigMap acgan-store" in err
