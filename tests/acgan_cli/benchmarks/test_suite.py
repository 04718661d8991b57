"""`acgan bench` (acgan_cli/benchmarks/suite.py): real (small) runs of the benchmarks; their speed is recorded in
bench/RESULTS.md, never asserted."""

import json
import math
import subprocess
import sys

import torch

from acgan.training.step import FastPath
from acgan_cli.benchmarks.machine import Row
from acgan_cli.benchmarks.suite import flops_per_image, table, train_throughput


def test_training_benchmark_steps_and_counts_flops():
    images_per_second, losses, warmup_seconds = train_throughput(32, 4, FastPath(), torch.device("cpu"), warmup=1,
                                                                 steps=2)
    assert images_per_second > 0 and len(losses) == 2 and all(math.isfinite(v) for v in losses)
    assert warmup_seconds > 0
    # One step runs G forward, D on real and fake, and both backward passes: several times D's forward alone.
    from torch.utils.flop_counter import FlopCounterMode

    from acgan.model import Discriminator, ModelConfig
    D = Discriminator(ModelConfig(resolution=32, channels=3, num_classes=10))
    with FlopCounterMode(display=False) as counter:
        D(torch.zeros(1, 3, 32, 32))
    assert flops_per_image(32, 2, torch.device("cpu")) > 4 * counter.get_total_flops()


def test_bench_cli_writes_json_and_table(tmp_path):
    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, "-m", "acgan_cli.main", "bench", "--only", "ms_ssim", "--out", str(out),
                           "--markdown", str(tmp_path / "results.md")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    record = json.loads(out.read_text())
    assert record["machine"]["cores"] >= 1 and record["machine"]["torch"] == torch.__version__
    assert record["machine"]["malloc"] == "tuned (acgan/allocator.py)"  # the CLI tunes it (glibc here)
    rows = [Row(**r) for r in record["rows"]]
    assert {r.unit for r in rows} >= {"pairs/s", "x"} and all(r.measured and r.measured > 0 for r in rows)
    assert "| MS-SSIM speed-up over numpy on the CPU | x | >= 10 |" in done.stderr
    assert "| MS-SSIM speed-up over numpy on the CPU | x | >= 10 |" in (tmp_path / "results.md").read_text()


def test_bench_bad_input_is_one_line(tmp_path):
    for args, message in ((["--only", "speed"], "--only speed: choose from"),
                          (["--device", "cuda"], "no CUDA GPU is visible"),
                          (["--out", str(tmp_path / "no" / "r.json")], "does not exist"),
                          (["--markdown", str(tmp_path / "no" / "r.md")], "does not exist")):
        if args[0] == "--device" and torch.cuda.is_available():
            continue
        done = subprocess.run([sys.executable, "-m", "acgan_cli.main", "bench", *args], capture_output=True, text=True)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


def test_table_marks_unmeasured_rows_pending():
    text = table([Row(figure="f", unit="s", target="< 1", measured=None, device="cpu", note="needs a GPU")])
    assert "| f | s | < 1 | pending | cpu | needs a GPU |" in text


def test_run_breakdown_from_the_runs_progress_events():
    """Read from the events the tasks write (acgan/progress.py), not from kfp.local's log text."""
    from acgan.progress import Event
    from acgan_cli.benchmarks.suite import run_breakdown

    def event(stage, kind, at, seconds):
        return Event(stage=stage, kind=kind, time=at, seconds=seconds)

    events = [event("prepare-data", "start", 1.0, 2.0), event("prepare-data", "done", 1.5, 0.5),
              event("train-split", "start", 4.0, 3.0), event("train-split", "start", 4.5, 4.0),
              event("train-split", "done", 54.0, 50.0), event("train-split", "done", 64.0, 51.0)]
    rows = {r.figure.strip(): r for r in run_breakdown(events, 70.0, "cpu")}
    assert rows["acgan run (embedded default), wall time"].measured == 70.0
    assert rows["of which prepare-data (work inside the tasks)"].measured == 0.5
    assert rows["of which prepare-data (work inside the tasks)"].note == ""
    train = rows["of which train-split (work inside the tasks)"]
    assert train.measured == 101.0
    assert train.note == "summed over 2 tasks; 60 s from the first start to the last end"
    assert rows["of which task start-up (process, imports, kfp executor), per task"].measured == 3.0


def test_eager_reference_runs_with_tf32_off():
    """cuDNN's TF32 default is on: the float32 reference turns it off for its steps only (the flags exist on a CPU
    build too, so the step's convolutions can be watched here)."""
    from torch.overrides import TorchFunctionMode

    seen = []

    class WatchConvolutions(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func in (torch.nn.functional.conv2d, torch.nn.functional.conv_transpose2d):
                seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
            return func(*args, **(kwargs or {}))

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        with WatchConvolutions():
            train_throughput(32, 2, FastPath(), torch.device("cpu"), warmup=0, steps=1)
        assert seen and set(seen) == {(False, False)}
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (True, True)
        seen.clear()
        with WatchConvolutions():  # the fast path keeps the machine's setting
            train_throughput(32, 2, FastPath(channels_last=True), torch.device("cpu"), warmup=0, steps=1)
        assert set(seen) == {(True, True)}
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_a_failing_benchmark_is_a_row_and_the_others_are_written(tmp_path, monkeypatch, capsys):
    from acgan_cli.benchmarks import suite as benchmarks
    from acgan_cli.main import main

    def out_of_memory(device):
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB\nmore detail")

    monkeypatch.setitem(benchmarks.BENCHMARKS, "training", out_of_memory)
    out = tmp_path / "results.json"
    assert main(["bench", "--only", "training,ms_ssim", "--out", str(out)]) == 2
    rows = [Row(**r) for r in json.loads(out.read_text())["rows"]]
    failed = [r for r in rows if r.error]
    assert [(r.figure, r.error) for r in failed] == [
        ("training benchmark", "RuntimeError: CUDA out of memory. Tried to allocate 20.00 GiB")]
    assert any(r.figure.startswith("MS-SSIM speed-up") and r.measured > 0 for r in rows)
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("acgan bench: error: 1 benchmark(s) failed (training benchmark: RuntimeError: CUDA out")
    assert "Traceback" not in "\n".join(err)


def test_gpu_default_set_leaves_out_the_embedded_run():
    from acgan_cli.benchmarks.suite import BENCHMARKS, default_benchmarks

    assert default_benchmarks(torch.device("cpu")) == list(BENCHMARKS)
    assert default_benchmarks(torch.device("cuda")) == [name for name in BENCHMARKS if name != "run"]
