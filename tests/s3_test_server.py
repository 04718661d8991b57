"""moto's standalone S3 server on loopback, with credential checks on and one IAM user allowed s3:*: the S3 test
server of the suite's fixtures (tests/conftest.py) and of the image check (tests/deploy/image_check.py)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from typing import Iterator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def s3_test_server() -> Iterator[dict]:
    """Yields the endpoint, port, the user's access and secret key, and the server's process."""
    import boto3

    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        endpoint = f"http://127.0.0.1:{port}"
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
                           aws_secret_access_key="bootstrap")
        iam.create_user(UserName="acgan")
        key = iam.create_access_key(UserName="acgan")["AccessKey"]
        iam.put_user_policy(UserName="acgan", PolicyName="s3", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        yield {"endpoint": endpoint, "port": port, "access_key": key["AccessKeyId"],
               "secret_key": key["SecretAccessKey"], "proc": proc}
    finally:
        proc.terminate()
        proc.wait(10)
