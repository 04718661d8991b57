"""No credential leaks: a whole `acgan run` against the S3 test server, with debug logging, and the compiled
pipeline. The secret key appears in no output, log, store object, task output or compiled spec."""

import os
import subprocess
import sys
from pathlib import Path

from acgan.store import open_store


def test_secret_appears_nowhere(s3_env, s3_server, tmp_path, fault_report):
    secret = s3_server["secret_key"]
    env = {**os.environ, "ACGAN_S3_ENDPOINT": s3_server["endpoint"], "AWS_ACCESS_KEY_ID": s3_server["access_key"],
           "AWS_SECRET_ACCESS_KEY": secret}
    run = subprocess.run(
        [sys.executable, "-m", "cli.main", "-v", "run", "--store", s3_env, "--steps", "2", "--batch-size", "8",
         "--checkpoint-every", "1", "--width", "0.0625", "--samples-per-class", "4", "--pairs", "3",
         "--classifier-steps", "5", "--pipeline-root", str(tmp_path / "kfp")],
        env=env, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    compiled = subprocess.run([sys.executable, "-m", "cli.main", "compile", "-o", str(tmp_path / "p.yaml")],
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
