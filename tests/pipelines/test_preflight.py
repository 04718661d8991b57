"""The submit preflight against recorded Kubernetes API server responses: a loopback HTTP server answers the API
paths with the JSON an API server returns (and KFP's healthz, with the JSON KFP 2.17's API server returns), and the
real `kubernetes` client reaches it through a kube config, the real kfp.Client through --host."""

import base64

import pytest
import yaml

from acgan_cli.main import main
from acgan.errors import UserError
from acgan.cluster_settings import ClusterSettings
from pipelines.preflight import pods_namespace, preflight
from tests.conftest import json_api

NS = "kubeflow"  # where standalone KFP runs the pods, and what manifests/overlays/standalone fills
PROFILE = "team-a"
HEALTHZ = "/apis/v2beta1/healthz"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def recorded_objects(ns: str = NS) -> dict[str, dict]:
    """What an API server holding manifests/overlays/standalone (or kubeflow-profile, in `ns`) with components/kueue
    answers, by path."""
    meta = {"namespace": ns, "uid": "0b7f", "resourceVersion": "812", "creationTimestamp": "2026-11-30T01:00:00Z"}
    return {
        f"/api/v1/namespaces/{ns}/secrets/acgan-store-credentials": {
            "kind": "Secret", "apiVersion": "v1", "type": "Opaque",
            "metadata": {"name": "acgan-store-credentials", **meta},
            "data": {"AWS_ACCESS_KEY_ID": _b64("acgan"), "AWS_SECRET_ACCESS_KEY": _b64("not-a-real-secret")}},
        f"/api/v1/namespaces/{ns}/configmaps/acgan-store": {
            "kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "acgan-store", **meta},
            "data": {"ACGAN_S3_ENDPOINT": "http://seaweedfs.kubeflow.svc.cluster.local:8333"}},
        f"/apis/kueue.x-k8s.io/v1beta2/namespaces/{ns}/localqueues/acgan": {
            "kind": "LocalQueue", "apiVersion": "kueue.x-k8s.io/v1beta2", "metadata": {"name": "acgan", **meta},
            "spec": {"clusterQueue": "acgan"}, "status": {"pendingWorkloads": 0, "admittedWorkloads": 0}},
        f"/api/v1/namespaces/{ns}/resourcequotas": {
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
    state = {"objects": recorded_objects(), "requests": [], "multi_user": False}

    def answer(path, headers):
        path = path.partition("?")[0]
        state["requests"].append((path, headers.get("Authorization")))
        if path == HEALTHZ:  # KFP's API server, backend/src/apiserver/main.go at 2.17.0
            return 200, {"commit_sha": "recorded", "tag_name": "2.17.0", "multi_user": state["multi_user"]}
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
        monkeypatch.setenv("KFP_TOKEN", "submitter-token")
        state["url"] = url
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


def test_submit_stops_before_the_run_with_one_line(api_server, capsys):
    """Standalone KFP: no --namespace, and the preflight looks where KFP will run the pods, `kubeflow`."""
    del api_server["objects"][f"/api/v1/namespaces/{NS}/configmaps/acgan-store"]
    code = main(["submit", "--host", api_server["url"], "--store", "s3://acgan/x"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"acgan submit: error: preflight: namespace {NS} lacks ConfigMap acgan-store" in err
    assert [p for p, _ in api_server["requests"]][0] == HEALTHZ


def test_standalone_kfp_refuses_a_namespace_it_would_not_run_the_pods_in(api_server, capsys):
    """Standalone KFP ignores a run's namespace and runs the pods in its own: a preflight of `acgan` would pass
    while the pods, in `kubeflow`, found no ServiceAccount or Secret there."""
    api_server["objects"] = recorded_objects("acgan")  # the earlier manifests' namespace, complete
    code = main(["submit", "--host", api_server["url"], "--store", "s3://acgan/x", "--namespace", "acgan"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert ("acgan submit: error: --namespace acgan: standalone (single-user) KFP runs every pod in its own "
            f"namespace, {NS}, whatever namespace a run names; drop --namespace") in err
    assert pods_namespace(False, None) == pods_namespace(False, NS) == NS


def test_multi_user_kfp_checks_the_profile_namespace(api_server, capsys, monkeypatch, tmp_path):
    import kfp

    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "no-context.json"))
    api_server["multi_user"] = True
    api_server["objects"] = recorded_objects(PROFILE)
    del api_server["objects"][f"/api/v1/namespaces/{PROFILE}/configmaps/acgan-store"]
    code = main(["submit", "--host", api_server["url"], "--store", "s3://acgan/x", "--namespace", PROFILE])
    assert code == 2
    assert f"preflight: namespace {PROFILE} lacks ConfigMap acgan-store" in capsys.readouterr().err
    code = main(["submit", "--host", api_server["url"], "--store", "s3://acgan/x"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "this KFP is multi-user and runs a run's pods in the user's profile namespace: pass --namespace" in err


def test_a_kfp_that_does_not_answer_is_one_line(api_server, capsys):
    code = main(["submit", "--host", "http://127.0.0.1:9", "--store", "s3://acgan/x"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "KFP at http://127.0.0.1:9 is unreachable" in err


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
    code = main(["rerun", "--host", api_server["url"], "--store", s3_env])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"acgan rerun: error: preflight: namespace {NS} lacks ConfigMap acgan-store" in err
