"""The S3 store over https: a real S3 server behind TLS with a certificate of a test CA (a private CA, as an operator's
store may have), reached with the CA given the way an operator gives it (SSL_CERT_FILE), and refused without it in
one line, at once: a certificate that fails verification is not an outage to retry."""

import time

import pytest

from acgan.errors import UserError
from acgan.store import open_store
from acgan_cli.main import main
from tests.conftest import store_server_env
from tests.s3_test_server import s3_test_server


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    with s3_test_server(tls=tmp_path_factory.mktemp("tls")) as server:
        yield server


@pytest.fixture
def tls_env(tls_server, monkeypatch):
    store_server_env(monkeypatch, tls_server, retry_seconds=300)  # a failure treated as transient would take this long
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    return tls_server


def test_the_store_verifies_an_https_endpoint_with_the_ca_in_ssl_cert_file(tls_env, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_env["ca"]))
    store = open_store("s3://acgan-tls/run")
    assert store.endpoint.startswith("https://")
    store.ensure_ready(create=True)
    store.write_bytes("experiment/a.json", b"{}")
    assert store.read_bytes("experiment/a.json") == b"{}" and store.list("experiment/") == ["experiment/a.json"]


def test_an_untrusted_certificate_is_one_line_at_once_naming_ssl_cert_file(tls_env, capsys):
    """Without the CA the system's bundle is used (verification is on), which does not hold the test CA: `acgan
    status` says so in one line naming the variable, at once, not after ACGAN_S3_RETRY_SECONDS of retries."""
    started = time.monotonic()
    assert main(["status", "--store", "s3://acgan-tls/run"]) == 2
    err = capsys.readouterr().err
    assert time.monotonic() - started < 30 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err == (f"acgan status: error: store endpoint {tls_env['endpoint']}: its TLS certificate failed "
                   "verification (unable to get local issuer certificate): give the CA bundle that signs it in "
                   "SSL_CERT_FILE (a PEM file; docs/operators.md), or use the name the certificate is for\n")
    assert tls_env["secret_key"] not in err


def test_a_ca_bundle_that_cannot_be_read_is_one_line(tls_env, monkeypatch, tmp_path):
    for bundle, problem in ((tmp_path / "missing.pem", "No such file or directory"),
                            (tmp_path / "empty.pem", "no certificate or crl found")):
        if bundle.name == "empty.pem":
            bundle.write_text("not a certificate\n")
        monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
        with pytest.raises(UserError) as e:
            open_store("s3://acgan-tls/run")
        assert str(e.value).startswith(f"SSL_CERT_FILE={bundle}: not a readable CA bundle (") and problem in str(e.value)
        assert str(e.value).endswith("give a PEM file of the CA certificates that sign the store's endpoint")
