"""The CPU step's rows of `acgan bench --only training` (acgan_cli/benchmarks/cpu_step.py): a tiny real run, and
the arithmetic it reports checked by hand."""

import pytest

from acgan_cli.benchmarks.cpu_step import cpu_extensions, demo_step_rows, inside_fraction
from acgan_cli.benchmarks.machine import cpu_model


def test_the_demo_steps_rows_name_the_cpu_and_its_extensions(tmp_path):
    """A tiny run of the CPU rows of `acgan bench --only training`: their shape and the CPU they name (no timing
    asserted)."""
    rows = demo_step_rows(steps=1, profiled=1, agreement_steps=4, matmul_n=64)
    extensions = cpu_extensions()
    assert all(r.device.startswith(cpu_model()) and all(e in r.device for e in extensions) for r in rows)
    assert [r.unit for r in rows[:3]] == ["GFLOP/s", "x", "x"] and rows[1].target == "<= 1.25"
    assert all(r.measured > 0 for r in rows[:3]) and "GFLOP of convolutions" in rows[1].note
    native = {"avx512_bf16", "amx_bf16"} & set(extensions)
    assert len(rows) == (5 if native else 4) and "bf16 autocast against float32" in rows[3].figure
    assert (rows[3].measured is None) == (not native)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: X\nflags\t\t: fpu sse2 avx2 avx512f amx_tile amx_bf16\n")
    assert cpu_extensions(cpuinfo) == ["avx2", "avx512f", "amx_tile", "amx_bf16"]


def test_the_arithmetic_on_image_pixels_leaves_out_the_padding_by_hand():
    # 3x3, padding 1, on 4x4: per axis 4 outputs x 3 taps, 2 of them on the padding: (10 / 12) ** 2
    assert inside_fraction((3, 3), (1, 1), (1, 1), (1, 1), False, (4, 4), (4, 4)) == pytest.approx((10 / 12) ** 2)
    # G's 5x5 stride-2 transposed convolution 8 -> 16 px: of 8 x 5 taps per axis, 2 + 1 land on the cropped border
    assert inside_fraction((5, 5), (2, 2), (2, 2), (1, 1), True, (8, 8), (16, 16)) == pytest.approx((37 / 40) ** 2)
    assert inside_fraction((3, 3), (1, 1), (0, 0), (1, 1), False, (8, 8), (6, 6)) == 1.0  # no padding: every tap
