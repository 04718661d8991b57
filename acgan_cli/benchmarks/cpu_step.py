"""`acgan bench --only training` on a CPU: the embedded run's training step against its arithmetic.

The step is the demo preset's (split 0 of the digits at 32 px, its networks and objective, batch 64) on one thread,
as `acgan run` trains each of its two splits. Its convolutions' FLOPs on image pixels (torch's FLOP counter's,
less the taps on zero padding: `inside_fraction`) divided by this CPU's float32 matrix-product rate, measured in the
same process on a large product, is the time they would take at that rate; the figure is the time the profiler finds
them taking, over that. Where the CPU multiplies bf16 natively (AVX512_BF16 or AMX-BF16), the same step under bf16
autocast is timed against float32, and their loss curves compared.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from acgan.model import Discriminator, Generator, ModelConfig
from acgan.presets import PRESETS
from acgan.settings import ModelSettings
from acgan.training.step import FastPath, TrainStep, make_optimizers
from acgan_cli.benchmarks.machine import Row, cpu_model

EXTENSIONS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")  # what decides the kernels torch picks
NATIVE_BF16 = ("avx512_bf16", "amx_bf16")
TARGET = 1.25  # issue 31: the convolutions within 1.25x of their arithmetic at the matrix-product rate


def cpu_extensions(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """Which of EXTENSIONS the CPU's flags name."""
    try:
        flags = next((line.split(":", 1)[1].split() for line in cpuinfo.read_text().splitlines()
                      if line.startswith("flags")), [])
    except OSError:
        flags = []
    return [name for name in EXTENSIONS if name in flags]


def cpu_name() -> str:
    extensions = cpu_extensions() or ["none of " + ", ".join(EXTENSIONS)]
    return f"{cpu_model()} ({', '.join(extensions)})"


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def matmul_gflops(n: int = 2048, repeat: int = 5) -> float:
    """float32 GFLOP/s of an n x n matrix product on this thread count: the best of `repeat`."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def demo_step(fast: FastPath, seed: int = 0) -> Callable[[], torch.Tensor]:
    """One training step of the embedded run's split 0 per call, drawn as the training loop draws it."""
    from acgan.data.sources import digits_source
    from acgan.training.loop import TrainConfig, training_batch

    cfg = TrainConfig(preset="demo", seed=seed)
    model_cfg = ModelConfig(resolution=PRESETS["demo"]["resolution"], channels=1,
                            num_classes=PRESETS["demo"]["classes_per_split"],
                            **cfg.model_dump(include=set(ModelSettings.model_fields)))
    per_class = digits_source(model_cfg.resolution).load_classes(list(range(model_cfg.num_classes)))
    images = torch.from_numpy(np.concatenate(per_class))
    labels = torch.cat([torch.full((len(x),), c) for c, x in enumerate(per_class)])
    torch.manual_seed(seed)
    G, D = Generator(model_cfg), Discriminator(model_cfg)
    rng = torch.Generator().manual_seed(seed)
    step = TrainStep(G, D, *make_optimizers(G, D, cfg.lr, (cfg.beta1, cfg.beta2), fast), fast, cfg.d_fake_class_loss,
                     cfg.mode_seeking, cfg.augment, rng)
    return lambda: step(*training_batch(images, labels, cfg, model_cfg, rng))


def step_seconds(one: Callable[[], torch.Tensor], steps: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        one()
    start = time.perf_counter()
    for _ in range(steps):
        one()
    return (time.perf_counter() - start) / steps


def inside_fraction(kernel, stride, padding, dilation, transposed: bool, size, out) -> float:
    """The fraction of a convolution's multiply-adds, as the FLOP counter counts them (every kernel tap at every
    output position; transposed, at every input position), that touch an image pixel rather than the zero padding
    or, transposed, the cropped border. The kernels skip the others: on the demo's 4x4 and 8x8 maps they are a large
    share. `size` and `out` are the input's and the output's spatial shape."""
    fraction = 1.0
    for n, m, k, s, p, d in zip(size, out, kernel, stride, padding, dilation):
        if transposed:  # input i, tap t lands at i*s - p + t*d of the output
            fraction *= sum(0 <= i * s - p + t * d < m for i in range(n) for t in range(k)) / (n * k)
        else:  # output o, tap t reads i*s - p + t*d of the input
            fraction *= sum(0 <= o * s - p + t * d < n for o in range(m) for t in range(k)) / (m * k)
    return fraction


def _conv_on_pixels(x_shape, w_shape, bias, stride, padding, dilation, transposed, *args, out_shape=None, **kwargs):
    from torch.utils.flop_counter import conv_flop_count

    return conv_flop_count(x_shape, w_shape, out_shape, transposed) * inside_fraction(
        w_shape[2:], stride, padding, dilation, transposed, x_shape[2:], out_shape[2:])


def _conv_backward_on_pixels(grad_shape, x_shape, w_shape, bias, stride, padding, dilation, transposed, *args,
                             out_shape=None, **kwargs):
    from torch.utils.flop_counter import conv_backward_flop

    return conv_backward_flop(grad_shape, x_shape, w_shape, bias, stride, padding, dilation, transposed, *args,
                              out_val=out_shape) * inside_fraction(w_shape[2:], stride, padding, dilation, transposed,
                                                       x_shape[2:], grad_shape[2:])


def conv_flops(one: Callable[[], torch.Tensor]) -> tuple[float, float, float]:
    """(FLOPs of one step's convolutions and their backward as torch's FLOP counter counts them, those of them on
    image pixels, FLOPs of the whole step): two steps, the second counted with the counter's formulas for
    convolutions scaled by `inside_fraction`."""
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    counts = []
    for mapping in ({}, {aten.convolution: _conv_on_pixels, aten.convolution_backward: _conv_backward_on_pixels}):
        with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
            one()
        counts.append((sum(v for op, v in counter.get_flop_counts()["Global"].items() if "convolution" in str(op)),
                       counter.get_total_flops()))
    return float(counts[0][0]), float(counts[1][0]), float(counts[0][1])


def conv_seconds(one: Callable[[], torch.Tensor], steps: int, warmup: int = 3) -> float:
    """Seconds per step inside the convolutions and their backward (aten::convolution and convolution_backward,
    their kernels included), by the profiler."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(warmup):
        one()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            one()
    micros = sum(e.cpu_time_total for e in prof.key_averages()
                 if e.key in ("aten::convolution", "aten::convolution_backward"))
    return micros / 1e6 / steps


def loss_gaps(steps: int, window: int) -> tuple[float, float]:
    """Largest relative gap of the bf16 loss_d and loss_g curves from float32's (`window`-step means), one seed."""
    curves = []
    for fast in (FastPath(bf16=True), FastPath()):
        one = demo_step(fast)
        curves.append(torch.stack([one()[:2] for _ in range(steps)]))
    bf16, fp32 = (c[: len(c) // window * window].reshape(-1, window, 2).mean(1) for c in curves)
    gaps = ((bf16 - fp32).abs() / fp32.abs()).amax(0)
    return float(gaps[0]), float(gaps[1])


def demo_step_rows(steps: int = 20, profiled: int = 5, agreement_steps: int = 200, matmul_n: int = 2048) -> list[Row]:
    """The rows of the embedded run's step on this CPU, one thread: the matrix-product rate, the convolutions and
    the whole step against it, and bf16 autocast against float32 where the CPU has native bf16."""
    name, extensions = cpu_name(), cpu_extensions()
    shape = "demo preset: digits 0-4 at 32 px, batch 64, one thread"
    with threads(1):
        rate = matmul_gflops(matmul_n) * 1e9
        one = demo_step(FastPath())
        counted, conv, total = conv_flops(one)
        total -= counted - conv  # the step's arithmetic on image pixels
        in_convs = conv_seconds(one, profiled)
        seconds = step_seconds(one, steps)
        rows = [
            Row(figure=f"float32 matrix product {matmul_n}x{matmul_n}, one thread", unit="GFLOP/s", target="-",
                measured=rate / 1e9, device=name),
            Row(figure=f"training step's convolutions against their arithmetic at that rate ({shape})", unit="x",
                target=f"<= {TARGET}", measured=in_convs / (conv / rate), device=name,
                note=f"{conv / 1e9:.2f} GFLOP of convolutions on image pixels a step ({counted / 1e9:.2f} by torch's "
                     f"FLOP counter, with the padding: {in_convs / (counted / rate):.2f}x) in "
                     f"{in_convs * 1000:.0f} ms (profiler, {profiled} steps): {conv / in_convs / 1e9:.0f} GFLOP/s"),
            Row(figure=f"training step against its arithmetic at that rate ({shape})", unit="x", target="-",
                measured=seconds / (total / rate), device=name,
                note=f"{total / 1e9:.2f} GFLOP a step on image pixels in {seconds * 1000:.0f} ms ({steps} steps)"),
        ]
        if not any(e in extensions for e in NATIVE_BF16):
            return rows + [Row(figure=f"training step, bf16 autocast against float32 ({shape})", unit="x",
                               target="-", measured=None, device=name,
                               note="not measured: no native bf16 (avx512_bf16, amx_bf16) on this CPU")]
        bf16 = step_seconds(demo_step(FastPath(bf16=True)), steps)
        window = max(1, min(50, agreement_steps // 4))
        gap_d, gap_g = loss_gaps(agreement_steps, window)
    return rows + [
        Row(figure=f"training step, bf16 autocast against float32 ({shape})", unit="x", target="-",
            measured=seconds / bf16, device=name, note=f"{bf16 * 1000:.0f} ms against {seconds * 1000:.0f} ms a step"),
        Row(figure=f"bf16 against float32 loss curves, {agreement_steps} steps (max gap of {window}-step means)",
            unit="relative", target="-", measured=max(gap_d, gap_g), device=name,
            note=f"loss_d {gap_d:.3f}, loss_g {gap_g:.3f}; the samples' quality: docs/experiments.md"),
    ]
