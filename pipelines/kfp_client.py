"""The KFP client of `acgan submit` and `acgan rerun`, and their one-line account of its errors.

The KFP client's environment is read here and nowhere else (`kfp_client`): KFP_TOKEN, the pod's KFP service account
token, the kube config's credentials, KFP_CA_BUNDLE.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from acgan.errors import UserError

log = logging.getLogger(__name__)


def kfp_client(host: str, namespace: str | None):
    """kfp.Client, authenticated the first way that applies (kfp.Client itself reads none of them once a host is
    given):
    1. KFP_TOKEN: a bearer token;
    2. a KFP service account token projected into this pod (KF_PIPELINES_SA_TOKEN_PATH, else kfp's default path
       /var/run/secrets/kubeflow/pipelines/token): kfp.client.ServiceAccountTokenVolumeCredentials, read again on
       every request as the kubelet rotates it;
    3. the kube config's credentials for its current context (KUBECONFIG, else ~/.kube/config): its token, or the
       token its exec plugin prints (`aws eks get-token`, `gke-gcloud-auth-plugin`), as a bearer token;
    4. none.
    KFP_CA_BUNDLE names a PEM file of the CA that signed the server's certificate (a private TLS)."""
    import kfp
    from kfp.client import KF_PIPELINES_SA_TOKEN_ENV, KF_PIPELINES_SA_TOKEN_PATH, ServiceAccountTokenVolumeCredentials

    auth: dict = {}
    ca_bundle = os.environ.get("KFP_CA_BUNDLE")
    if ca_bundle:
        if not Path(ca_bundle).is_file():
            raise UserError(f"KFP_CA_BUNDLE={ca_bundle}: no such file; give the PEM file of the CA that signed the "
                            "KFP server's certificate")
        auth["ssl_ca_cert"] = ca_bundle
    token_path = os.environ.get(KF_PIPELINES_SA_TOKEN_ENV) or KF_PIPELINES_SA_TOKEN_PATH
    if os.environ.get("KFP_TOKEN"):
        auth["existing_token"], how = os.environ["KFP_TOKEN"], "KFP_TOKEN"
    elif Path(token_path).is_file():
        auth["credentials"], how = ServiceAccountTokenVolumeCredentials(token_path), f"the token in {token_path}"
    elif (token := kube_config_token()) is not None:
        auth["existing_token"], how = token, "the kube config's credentials"
    else:
        how = "no credentials"
    log.info("KFP at %s: authenticating with %s", host, how)
    return kfp.Client(host=host, namespace=namespace, **auth)


def kube_config_token() -> str | None:
    """The bearer token of the kube config's current context, None without a kube config or a token in it."""
    from kubernetes.client import Configuration
    from kubernetes.config import ConfigException, load_kube_config

    config = Configuration()
    try:
        # KUBECONFIG read now: the kubernetes package reads it once, when first imported.
        load_kube_config(config_file=os.environ.get("KUBECONFIG", "~/.kube/config"), client_configuration=config)
    except (ConfigException, OSError):
        return None
    return config.api_key.get("authorization", "").removeprefix("Bearer ").strip() or None


def describe_kfp_error(e: Exception, host: str) -> str:
    status = getattr(e, "status", None)
    if status in (401, 403):
        return f"KFP at {host} rejected the credentials (HTTP {status}): set KFP_TOKEN or check your kube config"
    if status is not None:
        return f"KFP at {host} refused the request (HTTP {status}: {getattr(e, 'reason', '')})"
    return f"KFP at {host} is unreachable ({type(e).__name__}): check --host and your network"
