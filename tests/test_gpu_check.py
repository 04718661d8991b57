"""bench/gpu-check.sh in its tiny mode, on the CPU, from a fresh copy of the project: every step passes, training
with torch.compile on (Inductor's CPU path; Triton's on the GPU)."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_tiny_mode_passes_every_step(tmp_path):
    copy = tmp_path / "repo"
    copy.mkdir()
    # What a clone would hold: tracked files and new ones not ignored (no venv, no build output)
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout
    subprocess.run(["tar", "-cf", "-", "--null", "-T", "-"], cwd=REPO, input=files, check=True,
                   stdout=open(tmp_path / "repo.tar", "wb"))
    subprocess.run(["tar", "-xf", str(tmp_path / "repo.tar")], cwd=copy, check=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(GPU_CHECK_TINY="1", OUT=str(tmp_path / "out"), GPU_CHECK_WORK=str(tmp_path / "work"),
               GPU_CHECK_PYTHON=sys.executable, GPU_CHECK_BUDGET_S="600")  # compiling takes a minute of one core
    done = subprocess.run(["bash", "bench/gpu-check.sh"], cwd=copy, env=env, capture_output=True, text=True,
                          timeout=660)
    summary = (tmp_path / "out" / "summary.txt").read_text().splitlines()
    assert done.returncode == 0, "\n".join(summary) + done.stdout[-2000:]
    assert [line.split(":")[0] for line in summary] == [
        "PASS 0-device", "PASS 1-install", "PASS 2-prepare", "PASS 3-train", "PASS 4-resume", "PASS 5-assemble",
        "PASS 6-evaluate", "SKIP 7-bench"]
    assert f"project from {copy}" in summary[1]  # the copy was installed and ran, not this checkout
    assert "SIGKILLed with step" in summary[3] and "'compile': True" in summary[3]  # trained with torch.compile
    for name in ("check.log", "train-config.json", "stats.jsonl", "metrics.json", "6-evaluate.log"):
        assert (tmp_path / "out" / name).stat().st_size > 0, name
