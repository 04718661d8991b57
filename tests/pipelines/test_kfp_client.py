"""The KFP client each way it authenticates, with kfp.Client's constructor recorded and with the real client against a
recorded KFP server on loopback; and what a submit says when the server cannot be reached."""

import pytest
import yaml

from acgan.cluster_settings import ClusterSettings
from acgan.errors import UserError
from acgan.settings import RunSettings
from pipelines import runs
from pipelines.kfp_client import kfp_client
from pipelines.launch_settings import KfpTarget, SubmitSettings
from tests.conftest import json_api


class RecordedKfpClient:
    """kfp.Client's constructor, recording its arguments: there is no KFP API server here."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs


@pytest.fixture
def recorded_client(monkeypatch, tmp_path):
    import kfp

    monkeypatch.setattr(kfp, "Client", RecordedKfpClient)
    for name in ("KFP_TOKEN", "KFP_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kube-config"))
    return tmp_path


def test_kfp_client_authenticates_each_way_kfp_client_supports(recorded_client, monkeypatch):
    from kfp.client import ServiceAccountTokenVolumeCredentials
    from kubernetes.client import Configuration

    tmp = recorded_client
    host = "https://kfp.example/pipeline"
    assert kfp_client(host, "team-a").kwargs == {"host": host, "namespace": "team-a"}  # nothing to send

    # The kube config's current context: a token, as a bearer token (kfp.Client ignores it once a host is given).
    (tmp / "kube-config").write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
        "clusters": [{"name": "k", "cluster": {"server": "https://k8s.example:6443"}}],
        "users": [{"name": "u", "user": {"token": "kube-config-token"}}]}))
    monkeypatch.setenv("KUBECONFIG", str(tmp / "kube-config"))
    assert kfp_client(host, None).kwargs["existing_token"] == "kube-config-token"

    # In a pod: the projected KFP service account token wins over the kube config, read on every refresh.
    (tmp / "sa-token").write_text("projected-token-1")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp / "sa-token"))
    kwargs = kfp_client(host, None).kwargs
    assert isinstance(kwargs["credentials"], ServiceAccountTokenVolumeCredentials) and "existing_token" not in kwargs
    (tmp / "sa-token").write_text("projected-token-2")  # the kubelet rotated it
    config = Configuration()
    kwargs["credentials"].refresh_api_key_hook(config)
    assert config.api_key["authorization"] == "projected-token-2"

    # KFP_TOKEN wins over both; a CA bundle for a private TLS certificate.
    (tmp / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("KFP_TOKEN", "explicit-token")
    monkeypatch.setenv("KFP_CA_BUNDLE", str(tmp / "ca.pem"))
    kwargs = kfp_client(host, None).kwargs
    assert kwargs["existing_token"] == "explicit-token" and kwargs["ssl_ca_cert"] == str(tmp / "ca.pem")
    assert "credentials" not in kwargs
    monkeypatch.setenv("KFP_CA_BUNDLE", str(tmp / "missing.pem"))
    with pytest.raises(UserError, match=r"KFP_CA_BUNDLE=.*missing\.pem: no such file"):
        kfp_client(host, None)


def test_the_real_client_sends_the_token_and_trusts_the_ca_bundle(monkeypatch, tmp_path):
    """kfp.Client itself, built by kfp_client, against a recorded KFP health check on loopback: the bearer token
    reaches the server and the CA file is in the client's TLS settings."""
    seen = []

    def healthz(path, headers):
        seen.append((path, headers.get("Authorization")))
        return 200, {"commit_sha": "recorded", "tag_name": "2.17.0", "multi_user": False}

    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "no-token"))
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("KFP_TOKEN", "explicit-token")
    monkeypatch.setenv("KFP_CA_BUNDLE", str(tmp_path / "ca.pem"))
    with json_api(healthz) as url:
        client = kfp_client(url, None)
        client.get_kfp_healthz()
    assert seen and all(auth == "Bearer explicit-token" for _, auth in seen), seen
    assert seen[-1][0] == "/apis/v2beta1/healthz"
    assert client._run_api.api_client.configuration.ssl_ca_cert == str(tmp_path / "ca.pem")


def test_submit_to_unreachable_host_with_the_real_client():
    with pytest.raises(UserError, match=r"KFP at http://127.0.0.1:9 is unreachable"):
        runs.submit(RunSettings(store="s3://acgan/x"), cluster=ClusterSettings(), target=KfpTarget(),
                    submission=SubmitSettings(host="http://127.0.0.1:9", preflight=False))
