"""`acgan bench`: the speed figures that decide what a run costs, against their targets.

Each benchmark returns rows (figure, unit, target, measured, device, note). Training throughput counts one image as
one D update and one G update with a generated batch of that size; the fast path is compared with the plain eager
float32 step in the same process. Figures a machine cannot measure (the paper's 128 px network on a CPU is not
measured: it proves nothing about a GPU) are listed as pending with the reason.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from acgan import allocator
from acgan.metrics.ms_ssim import ms_ssim
from acgan.model import Discriminator, Generator, ModelConfig
from acgan.progress import ASSEMBLE, EVALUATE, PLAN, TRAIN, Event
from acgan.training.step import FastPath, TrainStep, make_optimizers
from acgan_cli.benchmarks.cpu_step import demo_step_rows
from acgan_cli.benchmarks.ensemble import untrained_ensemble
from acgan_cli.benchmarks.machine import Row, cpu_model, device_name
from acgan_cli.benchmarks.ms_ssim_reference import ms_ssim_pair
from acgan_cli.benchmarks.serve import bench_serve

# Dense bf16 tensor-core peaks (TFLOP/s) from the vendor's data sheets, by device name.
BF16_PEAK_TFLOPS = {"H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 PCIe": 756.0, "H100 NVL": 835.0,
                    "H200": 989.4, "A100": 312.0, "L4": 121.0}
PAPER_RUN_IMAGES = 100 * 50_000 * 100  # 100 splits x 50,000 steps x batch 100

log = logging.getLogger(__name__)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train_rig(resolution: int, batch: int, fast: FastPath, device: torch.device, seed: int = 0):
    torch.manual_seed(seed)
    cfg = ModelConfig(resolution=resolution, channels=3, num_classes=10)  # the paper's networks
    G, D = Generator(cfg).to(device), Discriminator(cfg).to(device)
    opt_g, opt_d = make_optimizers(G, D, 2e-4, (0.5, 0.999), fast)
    step = TrainStep(G, D, opt_g, opt_d, fast)
    gen = torch.Generator(device).manual_seed(seed)
    # The split's data resident on the device as uint8, as the training loop keeps it.
    images = torch.randint(0, 256, (1000, 3, resolution, resolution), dtype=torch.uint8, device=device, generator=gen)
    labels = torch.randint(10, (1000,), device=device, generator=gen)

    def one() -> torch.Tensor:
        idx = torch.randint(len(images), (batch,), device=device, generator=gen)
        z = torch.randn(batch, cfg.noise_dim, device=device, generator=gen)
        y_fake = torch.randint(10, (batch,), device=device, generator=gen)
        return step(images[idx].float() / 127.5 - 1, labels[idx], z, y_fake)

    return one, G, D


def flops_per_image(resolution: int, batch: int, device: torch.device) -> float:
    """Model FLOPs of one training step per image, counted by torch's FLOP counter on the float32 eager step."""
    from torch.utils.flop_counter import FlopCounterMode

    one, _, _ = _train_rig(resolution, batch, FastPath(), device)
    with FlopCounterMode(display=False) as counter:
        one()
    return counter.get_total_flops() / batch


@contextlib.contextmanager
def _precision_of(fast: FastPath):
    """The reference is float32 proper: TF32 off in matmuls and cuDNN convolutions (cuDNN's default is on), or the
    fast path's speed-up would compare bf16 with TF32."""
    if fast != FastPath():
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def train_throughput(resolution: int, batch: int, fast: FastPath, device: torch.device, warmup: int,
                     steps: int) -> tuple[float, list[float], float]:
    """(images per second, loss_d of every timed step, seconds of the warm-up steps)."""
    with _precision_of(fast):
        return _timed_steps(resolution, batch, fast, device, warmup, steps)


def _timed_steps(resolution: int, batch: int, fast: FastPath, device: torch.device, warmup: int,
                 steps: int) -> tuple[float, list[float], float]:
    one, _, _ = _train_rig(resolution, batch, fast, device)
    start = time.perf_counter()
    for _ in range(warmup):  # compilation and autotuning happen here
        one()
    _sync(device)
    warmup_seconds = time.perf_counter() - start
    start = time.perf_counter()
    stats = [one() for _ in range(steps)]
    _sync(device)
    elapsed = time.perf_counter() - start
    return steps * batch / elapsed, [s[0].item() for s in stats], warmup_seconds


def loss_agreement(resolution: int, batch: int, fast: FastPath, device: torch.device, steps: int) -> float:
    """Largest gap between the fast and reference loss_d curves (50-step means), relative to the reference."""
    curves = []
    for path in (fast, FastPath()):
        with _precision_of(path):
            one, _, _ = _train_rig(resolution, batch, path, device)
            curves.append(torch.stack([one()[0] for _ in range(steps)]).float().cpu())
    window = max(1, min(50, steps // 4))
    means = [c[: len(c) // window * window].view(-1, window).mean(1) for c in curves]
    return float(((means[0] - means[1]).abs() / means[1].abs()).max())


def bench_training(device: torch.device, steps: int | None = None) -> list[Row]:
    gpu = device.type == "cuda"
    resolution, batch = (128, 100) if gpu else (32, 100)
    tiny = steps is not None  # a test's run: the CPU step's rows as short as they go
    steps = steps or (200 if gpu else 5)
    warmup = 20 if gpu else 2
    fast = FastPath.resolve(device)
    name = device_name(device)
    fast_ips, _, fast_warmup = train_throughput(resolution, batch, fast, device, warmup, steps)
    ref_ips, _, ref_warmup = train_throughput(resolution, batch, FastPath(), device, warmup, steps)
    flops = flops_per_image(resolution, batch, device)
    shape = f"paper network, {resolution}x{resolution}, batch {batch}"
    rows = [
        Row(figure=f"training step, fast path ({shape})", unit="images/s", target=">= 8000 on one H100 at 128px",
            measured=fast_ips, device=name, note=f"fast path: {fast.model_dump()}"),
        Row(figure=f"training step, eager float32 reference ({shape})", unit="images/s", target="-",
            measured=ref_ips, device=name, note="TF32 off"),
        Row(figure="fast path / reference", unit="x", target=">= 3 on a GPU", measured=fast_ips / ref_ips,
            device=name, note="" if gpu else "on a CPU the fast path is the float32 eager step itself"),
        Row(figure=f"training step, fast path warm-up: first {warmup} steps", unit="s", target="-",
            measured=fast_warmup, device=name,
            note=f"torch.compile of G and D and autotuning; the reference's first {warmup} steps: {ref_warmup:.1f} s"
            if fast.compile else "no torch.compile on this device"),
        Row(figure=f"model FLOPs per image ({resolution}px, one D and one G update)", unit="GFLOP", target="-",
            measured=flops / 1e9, device="-"),
    ]
    peak = next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None) if gpu else None
    rows.append(Row(figure="achieved fraction of bf16 peak", unit="%", target="-",
                    measured=100 * flops * fast_ips / (peak * 1e12) if peak else None, device=name,
                    note=f"peak {peak} TFLOP/s dense bf16" if peak else "no bf16 peak known for this device"))
    if gpu and resolution == 128:
        hours = PAPER_RUN_IMAGES / fast_ips / 3600
        rows.append(Row(figure="paper's full ensemble (100 splits x 50,000 steps x batch 100)", unit="GPU-hours",
                        target="< 24 H100-hours", measured=hours, device=name))
        rows.append(Row(figure="fast vs reference loss_d, 300 steps (max gap of 50-step means)", unit="relative",
                        target="within noise (< 0.1)", measured=loss_agreement(resolution, batch, fast, device, 300),
                        device=name))
    else:
        rows.append(Row(figure="paper's full ensemble (100 splits x 50,000 steps x batch 100)", unit="GPU-hours",
                        target="< 24 H100-hours", measured=None, device=name,
                        note="pending: needs the 128px figure from a GPU (acgan bench --device cuda)"))
    if not gpu:
        rows += demo_step_rows(steps, 1, 8, 256) if tiny else demo_step_rows()
    return rows


def _write_jpegs(root: Path, classes: int, per_class: int, seed: int = 0) -> int:
    """ImageNet-like JPEGs: 500x375, smooth structure plus noise, quality 90."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:375, :500] / 500.0
    for c in range(classes):
        folder = root / f"class-{c:03d}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            f = rng.uniform(2, 12, 3)
            img = np.stack([127 + 100 * np.sin(f[k] * xx + f[(k + 1) % 3] * yy + i) for k in range(3)], axis=-1)
            img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(folder / f"{i:05d}.jpg", quality=90)
    return classes * per_class


def bench_data_preparation(classes: int = 4, per_class: int = 250) -> list[Row]:
    """JPEGs (500x375) to 128x128 uint8 shards in a local store, through `acgan prepare`'s code, on every core."""
    from acgan.data.prepare import PrepareConfig, prepare
    from acgan.data.sources import usable_cores
    from acgan.store import LocalStore

    with tempfile.TemporaryDirectory() as tmp:
        n = _write_jpegs(Path(tmp) / "jpegs", classes, per_class)
        start = time.perf_counter()
        prepare(PrepareConfig(dataset="folder", source=Path(tmp) / "jpegs", resolution=128,
                              classes_per_split=classes), LocalStore(Path(tmp) / "store"))
        elapsed = time.perf_counter() - start
    cores = usable_cores()
    return [Row(figure="data preparation, 500x375 JPEG -> 128x128 shards", unit="images/s per core",
                target=">= 400", measured=n / elapsed / cores, device=f"{cpu_model()} x {cores}",
                note=f"{n} images, {n / elapsed:.0f} images/s on {cores} cores")]


def _pairs_per_second(fn: Callable[[], object], pairs: int, device: torch.device, repeat: int = 3) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return pairs / best


def bench_ms_ssim(device: torch.device) -> list[Row]:
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, 256, (256, 3, 128, 128), generator=gen).float()
    b = (a + torch.randn(a.shape, generator=gen) * 30).clamp(0, 255)
    name = device_name(device)
    numpy_pairs = 8
    a_np, b_np = a[:numpy_pairs].permute(0, 2, 3, 1).numpy(), b[:numpy_pairs].permute(0, 2, 3, 1).numpy()
    numpy_pps = _pairs_per_second(lambda: [ms_ssim_pair(a_np[i], b_np[i], 255) for i in range(numpy_pairs)],
                                  numpy_pairs, torch.device("cpu"))
    torch_cpu = _pairs_per_second(lambda: ms_ssim(a, b, 255), len(a), torch.device("cpu"))
    rows = [Row(figure="MS-SSIM 128x128, numpy/scipy reference (one pair at a time)", unit="pairs/s", target="-",
                measured=numpy_pps, device=device_name(torch.device("cpu"))),
            Row(figure="MS-SSIM 128x128, ours on the CPU (256 pairs a call)", unit="pairs/s", target="-",
                measured=torch_cpu, device=device_name(torch.device("cpu"))),
            Row(figure="MS-SSIM speed-up over numpy on the CPU", unit="x", target=">= 10", measured=torch_cpu / numpy_pps,
                device=device_name(torch.device("cpu")))]
    if device.type == "cuda":
        big_a = torch.randint(0, 256, (100_000, 3, 128, 128), dtype=torch.uint8, device=device)
        big_b = torch.randint(0, 256, (100_000, 3, 128, 128), dtype=torch.uint8, device=device)

        def all_pairs():
            for i in range(0, 100_000, 5000):
                ms_ssim(big_a[i:i + 5000], big_b[i:i + 5000], 255)
        seconds = 100_000 / _pairs_per_second(all_pairs, 100_000, device, repeat=1)
        rows.append(Row(figure="MS-SSIM, 100,000 pairs at 128x128", unit="s", target="< 10 on one H100",
                        measured=seconds, device=name))
    else:
        rows.append(Row(figure="MS-SSIM, 100,000 pairs at 128x128", unit="s", target="< 10 on one H100",
                        measured=100_000 / torch_cpu, device=name, note="estimated from the CPU rate above"))
    return rows


def bench_evaluation(device: torch.device, classes: int | None = None) -> list[Row]:
    """`evaluate` at 128px, 100 samples and 100 pairs per class, the classifier already trained; measured on
    `classes` synthetic classes (100 on a GPU) and scaled to 1000. What is timed is the evaluation, not the
    generators' quality, so the ensemble is untrained (`untrained_ensemble`)."""
    from acgan.evaluation.analyses import evaluate
    from acgan.evaluation.inputs import real_on_disk
    from acgan.layout import METRICS_KEY
    from acgan.settings import EvalSettings
    from acgan.metrics.classifier import save_classifier, train_classifier
    from acgan.store import LocalStore

    classes = classes or (100 if device.type == "cuda" else 20)
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalStore(tmp)
        plan = untrained_ensemble(store, classes)
        with real_on_disk(store, plan, 100, 0) as (real, labels):
            model, info = train_classifier(real, labels, classes, steps=1, device=device)
        save_classifier(store, model.cpu(), info)
        start = time.perf_counter()
        evaluate(store, EvalSettings(samples_per_class=100, pairs=100, device=device.type))
        elapsed = time.perf_counter() - start
        on = json.loads(store.read_bytes(METRICS_KEY))["computed_on"]
    peak = f"peak {on['peak_host_memory_bytes'] / 2**30:.1f} GiB resident"
    if on.get("peak_device_memory_bytes") is not None:
        peak += f", {on['peak_device_memory_bytes'] / 2**30:.1f} GiB on the GPU"
    return [Row(figure=f"evaluation, 1000 classes x 100 samples at 128px (measured on {classes}, scaled)",
                unit="s", target="< 120 on one H100", measured=elapsed * 1000 / classes, device=device_name(device),
                note=f"{elapsed:.1f} s for {classes} classes; the classifier trained beforehand; {peak} (real images "
                     f"and samples are held one split at a time)")]


def bench_embedded_run(device: torch.device) -> list[Row]:
    """`acgan run` with its defaults in a fresh directory, as a user runs it; where its time goes, from the run's
    progress events (acgan/progress.py): each task's start-up and the work inside it."""
    import sys

    from acgan.progress import read_events

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "acgan_cli.main", "run", "--store", f"{tmp}/store",
                               "--pipeline-root", f"{tmp}/runs"], capture_output=True, text=True, cwd=tmp)
        total = time.perf_counter() - start
        if done.returncode != 0:
            tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"acgan run failed: {tail[0]}")
        events = [e for path in Path(tmp, "runs", "logs").glob("*/progress.jsonl") for e in read_events(path)]
    return run_breakdown(events, total, device_name(device))


def run_breakdown(events: list[Event], total: float, name: str) -> list[Row]:
    """Rows from a run's progress events: per step the work its tasks report, and each task's start-up (its
    process, imports and kfp's executor, before the step began)."""
    starts, ends = [e for e in events if e.kind == "start"], [e for e in events if e.kind == "done"]
    startup = [e.seconds for e in starts if e.seconds is not None]
    rows = [Row(figure="acgan run (embedded default), wall time", unit="s", target="< 600 on 2 cores",
                measured=total, device=name, note=f"{len(starts)} tasks")]
    for step in (PLAN, TRAIN, ASSEMBLE, EVALUATE):
        done = [e.seconds for e in ends if e.stage == step]
        note = ""
        if len(done) > 1:  # tasks of one step may run side by side: their work adds up to more than their wall time
            span = max(e.time for e in ends if e.stage == step) - min(e.time for e in starts if e.stage == step)
            note = f"summed over {len(done)} tasks; {span:.0f} s from the first start to the last end"
        rows.append(Row(figure=f"  of which {step} (work inside the tasks)", unit="s", target="-",
                        measured=sum(done) if done else None, device=name, note=note))
    rows.append(Row(figure="  of which task start-up (process, imports, kfp executor), per task", unit="s",
                    target="-", measured=sum(startup) / max(len(startup), 1), device=name,
                    note=f"{sum(startup):.1f} s over {len(startup)} tasks; the rest is pipeline compilation, the CLI "
                         "and kfp.local's own work between tasks"))
    return rows


BENCHMARKS = {"training": bench_training, "data": bench_data_preparation, "ms_ssim": bench_ms_ssim,
              "evaluation": bench_evaluation, "run": bench_embedded_run, "serve": bench_serve}


def default_benchmarks(device: torch.device) -> list[str]:
    """All of them on a CPU; on a GPU all but the embedded run, a CPU figure that needs kfp.local (one GPU machine
    runs the rest in under 8 minutes)."""
    return [name for name in BENCHMARKS if device.type != "cuda" or name != "run"]


def run_benchmarks(device: torch.device, only: list[str] | None = None) -> list[Row]:
    """Every benchmark on its own: one that fails (out of memory, a missing package) becomes a row saying why, and
    the others still run."""
    rows: list[Row] = []
    names = only or default_benchmarks(device)
    if "run" not in names and only is None:
        rows.append(Row(figure="acgan run (embedded default), wall time", unit="s", target="< 600 on 2 cores",
                        measured=None, device=device_name(device),
                        note="not in the GPU default set: a CPU figure that needs kfp.local (`--only run`)"))
    for name in tqdm(names, desc="benchmarks", unit="benchmark"):
        fn = BENCHMARKS[name]
        try:
            rows += fn() if name == "data" else fn(device)
        except Exception as e:  # noqa: BLE001 - any failure of one benchmark is reported in its row
            reason = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}"
            log.warning("benchmark %s failed: %s", name, reason)
            rows.append(Row(figure=f"{name} benchmark", unit="-", target="-", measured=None,
                            device=device_name(device), note=f"failed: {reason}", error=reason))
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()  # a failed benchmark's memory must not fail the next one
    return rows


def machine_record(device: torch.device) -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip() or "unknown"
    return {"date": time.strftime("%Y-%m-%d"), "commit": commit, "device": device_name(device), "cpu": cpu_model(),
            "cores": os.cpu_count(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "threads": torch.get_num_threads(),
            "malloc": "tuned (acgan/allocator.py)" if allocator.tuned else "the C library's defaults"}


def table(rows: list[Row]) -> str:
    """A Markdown table: what the terminal shows and what bench/RESULTS.md records."""
    def fmt(v: float | None) -> str:
        if v is None:
            return "pending"
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
    lines = ["| figure | unit | target | measured | device | note |", "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r.figure} | {r.unit} | {r.target} | {fmt(r.measured)} | {r.device} | {r.note} |" for r in rows]
    return "\n".join(lines)

