"""What every benchmark's figure is recorded as (a Row) and the machine it names: the device, the CPU model."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch
from pydantic import BaseModel


class Row(BaseModel):
    figure: str
    unit: str
    target: str
    measured: float | None
    device: str
    note: str = ""
    error: str | None = None  # the one-line reason a benchmark failed; its other figures are then missing


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} ({os.cpu_count()} cores)"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
