"""The CPU allocator settings: applied at every process entry, left alone when the operator set their own, and what
they are for: a batched loop stops page-faulting its buffers in on every pass."""

import os
import subprocess
import sys

PASSES = """
import resource, sys, torch
from acgan import allocator
from acgan.metrics.ms_ssim import ms_ssim
tuned = allocator.tune() if sys.argv[1] == "tune" else False
a, b = torch.rand(64, 3, 128, 128), torch.rand(64, 3, 128, 128)
ms_ssim(a, b, 1.0)  # the first pass grows the heap either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    ms_ssim(a, b, 1.0)
print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _run(mode: str, **env: str) -> tuple[bool, int]:
    clean = {k: v for k, v in os.environ.items() if not (k == "GLIBC_TUNABLES" or k.startswith("MALLOC_"))}
    out = subprocess.run([sys.executable, "-c", PASSES, mode], capture_output=True, text=True, check=True,
                         env={**clean, **env}).stdout.split()
    return out[0] == "True", int(out[1])


def test_tuned_passes_stop_faulting_their_buffers_in():
    tuned, tuned_faults = _run("tune")
    _, default_faults = _run("default")
    assert tuned
    assert tuned_faults * 10 < default_faults, (tuned_faults, default_faults)


def test_the_operators_malloc_settings_win():
    assert _run("tune", MALLOC_ARENA_MAX="2")[0] is False
    assert _run("tune", GLIBC_TUNABLES="glibc.malloc.trim_threshold=0")[0] is False
