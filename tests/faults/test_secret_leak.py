"""No credential leaks: a whole `acgan run` against the S3 test server, with debug logging, and the compiled
pipeline. The secret key appears in no output, log, store object, task output or compiled spec."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from acgan.store import open_store


def test_secret_appears_nowhere(s3_env, s3_server, tmp_path, fault_report):
    secret = s3_server["secret_key"]
    env = {**os.environ, "ACGAN_S3_ENDPOINT": s3_server["endpoint"], "AWS_ACCESS_KEY_ID": s3_server["access_key"],
           "AWS_SECRET_ACCESS_KEY": secret}
    run = subprocess.run(
        [sys.executable, "-m", "acgan_cli.main", "-v", "run", "--store", s3_env, "--steps", "2", "--batch-size", "8",
         "--checkpoint-every", "1", "--width", "0.0625", "--samples-per-class", "4", "--pairs", "3",
         "--classifier-steps", "5", "--pipeline-root", str(tmp_path / "kfp")],
        env=env, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    compiled = subprocess.run([sys.executable, "-m", "acgan_cli.main", "compile", "-o", str(tmp_path / "p.yaml"),
                               "--image", "registry.example.com/acgan-ensemble:1"],
                              env=env, capture_output=True, text=True, timeout=120)
    assert compiled.returncode == 0, compiled.stderr[-2000:]

    places = {"stdout": run.stdout, "stderr (debug log)": run.stderr, "compile output": compiled.stdout +
              compiled.stderr}
    for path in Path(tmp_path).rglob("*"):
        if path.is_file():
            places[str(path)] = path.read_bytes().decode("utf-8", "replace")
    store = open_store(s3_env)  # s3_env set the same credentials in this process
    keys = [k for prefix in ("data/", "splits/", "eval/") for k in store.list(prefix)]
    keys += [k for k in ("plan.json", "experiment.json", "ensemble.json") if store.exists(k)]
    for key in keys:
        places[f"store:{key}"] = store.read_bytes(key).decode("utf-8", "replace")
    assert any(k.startswith("store:eval/report.html") for k in places) and any(p.endswith("p.yaml") for p in places)
    leaks = [where for where, text in places.items() if secret in text]
    assert leaks == []
    fault_report("credential leak", "full run with S3 credentials set, debug logging; every output, log, task "
                 f"output, store object and the compiled spec searched ({len(places)} places)", 1, 1, "none",
                 "secret found in 0 places")


SECRET = "hunter2/secret+key"  # an AWS secret key may hold '/' and '+', which end a URI's authority early
CREDENTIALS = f"AKIAEXAMPLE:{SECRET}"
OPTIONS = ["--dataset", "folder", "--source", "s3://acgan-test/train"]
URIS_WITH_CREDENTIALS = {
    "submit --store": ["submit", "--host", "{kfp}", "--store", f"s3://{CREDENTIALS}@acgan-test/x", "--no-preflight"],
    "submit --source": ["submit", "--host", "{kfp}", "--store", "s3://acgan-test/x", "--dataset", "folder",
                        "--source", f"s3://{CREDENTIALS}@acgan-test/train", "--no-preflight"],
    "submit --class-list": ["submit", "--host", "{kfp}", "--store", "s3://acgan-test/x", *OPTIONS, "--class-list",
                            f"s3://{CREDENTIALS}@acgan-test/classes.txt", "--no-preflight"],
    "submit --host": ["submit", "--host", f"http://{CREDENTIALS}@{{authority}}", "--store", "s3://acgan-test/x",
                      "--no-preflight"],
    "submit --source-endpoint": ["submit", "--host", "{kfp}", "--store", "s3://acgan-test/x", *OPTIONS,
                                 "--source-endpoint", f"http://{CREDENTIALS}@10.0.0.9:9000", "--no-preflight"],
    "compile --source-endpoint": ["compile", "-o", "p.yaml", "--image", "registry.example.com/acgan-ensemble:1",
                                  "--source-endpoint", f"https://{CREDENTIALS}@s3.x"],
    "run --store": ["run", "--store", f"s3://{CREDENTIALS}@acgan-test/x"],
    "run --source": ["run", "--dataset", "folder", "--source", f"s3://{CREDENTIALS}@acgan-test/train"],
    "rerun --store": ["rerun", "--local", "--store", f"s3://{CREDENTIALS}@acgan-test/x"],
    "prepare --source": ["prepare", "--store", "store", "--dataset", "folder", "--source",
                         f"s3://{CREDENTIALS}@acgan-test/train"],
    "prepare --class-list": ["prepare", "--store", "store", "--dataset", "folder", "--source", "train",
                             "--class-list", f"file://{CREDENTIALS}@host/classes.txt"],
    "train-split --store": ["train-split", "--store", f"s3://{CREDENTIALS}@acgan-test/x", "--split", "0"],
    "status --store": ["status", "--store", f"s3://{CREDENTIALS}@acgan-test/x"],
    "sample --store": ["sample", "--store", f"s3://{CREDENTIALS}@acgan-test/x", "--class", "0", "--out", "a.png"],
    "evaluate --store": ["evaluate", "--store", f"s3://{CREDENTIALS}@acgan-test/x"],
    "compare STORE": ["compare", "s3://acgan-test/a", f"s3://{CREDENTIALS}@acgan-test/b"],
}


@pytest.fixture
def kfp_listener():
    """A port standing in for the KFP API: counts the connections made to it (none may be made)."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    accepted = []

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted.append(1)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield f"127.0.0.1:{server.getsockname()[1]}", accepted
    server.close()


def test_credentials_in_any_uri_are_refused_before_anything_starts(tmp_path, monkeypatch, capfd, caplog,
                                                                   kfp_listener, fault_report):
    """Every command, every URI option: refused at the start in one line that shows the URI redacted; nothing
    compiled, submitted, logged or written (the working directory stays empty), no request to the KFP API."""
    from acgan_cli.main import main

    authority, accepted = kfp_listener
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ACGAN_S3_ENDPOINT", "http://127.0.0.1:9")
    (tmp_path / "train").mkdir()
    refused = []
    for case, argv in URIS_WITH_CREDENTIALS.items():
        argv = [a.format(kfp=f"http://{authority}", authority=authority) for a in argv]
        code = main(argv)
        out, err = capfd.readouterr()
        everything = out + err + caplog.text
        caplog.clear()
        lines = [line for line in err.splitlines() if "error:" in line]
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, (case, err[-2000:])
        assert "***@" in lines[0] and "credentials" in lines[0], (case, lines[0])
        assert SECRET not in everything and "hunter2" not in everything, (case, everything[-2000:])
        written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.name != "train")
        assert written == [] and accepted == [], (case, written, accepted)
        refused.append(case)
    fault_report("credentials in a URI", "a secret with '/' and '+' inside --store, --source, --class-list, --host "
                 f"or --source-endpoint of every command ({len(URIS_WITH_CREDENTIALS)} cases)", len(refused),
                 len(refused), "none: refused at the start in one line", "none; nothing compiled, submitted, "
                 "logged or written, no request to KFP")


def test_settings_refuse_credentials_in_uris_without_showing_them():
    """What a run from the KFP UI validates (the components build these models): the same refusal, and pydantic's
    own text of the error does not hold the input either."""
    from pydantic import ValidationError

    from acgan.errors import explain
    from acgan.cluster_settings import ClusterSettings
    from acgan.settings import RunSettings

    bad = f"s3://{CREDENTIALS}@acgan-test/x"
    for model, values in [(RunSettings, {"store": bad}),
                          (RunSettings, {"store": "s3://b/x", "dataset": "folder", "source": bad}),
                          (RunSettings, {"store": "s3://b/x", "dataset": "folder", "source": "s3://b/t",
                                         "class_list": bad}),
                          (ClusterSettings, {"source_endpoint": f"http://{CREDENTIALS}@10.0.0.9:9000"})]:
        with pytest.raises(ValidationError) as info:
            model.model_validate(values)
        assert "holds credentials" in explain(info.value) and "***@" in explain(info.value)
        assert "hunter2" not in explain(info.value) and "hunter2" not in str(info.value)
