"""moto's standalone S3 server on loopback, with credential checks on and one IAM user allowed s3:*: the S3 test
server of the suite's fixtures (tests/conftest.py) and of the image check (tests/deploy/image_check.py); behind TLS
with a certificate of a test CA of its own, as an operator's store with a private CA is."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from ipaddress import IPv4Address
from pathlib import Path
from typing import Iterator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_test_ca(folder: Path) -> dict[str, Path]:
    """A CA of its own (ca.pem) and a certificate it signs for 127.0.0.1 and localhost (cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def certificate(subject: str, key, issuer: str, signer, ca: bool) -> x509.Certificate:
        now = datetime.now(timezone.utc)
        builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=2))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if ca:
            builder = builder.add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                                            critical=True)
        else:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(IPv4Address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
        return builder.sign(signer, hashes.SHA256())

    folder.mkdir(parents=True, exist_ok=True)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    pem = serialization.Encoding.PEM
    paths = {"ca": folder / "ca.pem", "cert": folder / "cert.pem", "key": folder / "key.pem"}
    paths["ca"].write_bytes(certificate("acgan test CA", ca_key, "acgan test CA", ca_key, True).public_bytes(pem))
    paths["cert"].write_bytes(certificate("127.0.0.1", key, "acgan test CA", ca_key, False).public_bytes(pem))
    paths["key"].write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return paths


@contextlib.contextmanager
def s3_test_server(tls: Path | None = None) -> Iterator[dict]:
    """Yields the endpoint, port, the user's access and secret key, and the server's process; with `tls`, a folder,
    the server speaks https with a certificate of a test CA made there, whose PEM file is yielded as "ca"."""
    import boto3

    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}
    certs = make_test_ca(tls) if tls else None
    serve_tls = ["-c", str(certs["cert"]), "-k", str(certs["key"])] if certs else []
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port), *serve_tls],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        endpoint = f"{'https' if certs else 'http'}://127.0.0.1:{port}"
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.2)
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bootstrap",
                           aws_secret_access_key="bootstrap", verify=str(certs["ca"]) if certs else None)
        iam.create_user(UserName="acgan")
        key = iam.create_access_key(UserName="acgan")["AccessKey"]
        iam.put_user_policy(UserName="acgan", PolicyName="s3", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        yield {"endpoint": endpoint, "port": port, "access_key": key["AccessKeyId"],
               "secret_key": key["SecretAccessKey"], "proc": proc, "ca": certs["ca"] if certs else None}
    finally:
        proc.terminate()
        proc.wait(10)
