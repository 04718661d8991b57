"""Capacity planning for cluster operators (`acgan plan`): GPU-hours, wall time and node count of a run.

Every split trains independently on one GPU, so a run is `splits` equal tasks scheduled `concurrent` at a time,
where `concurrent` is the smallest of the GPUs available, the pipeline's parallelism and the number of splits.
A task's time is its images (steps x batch size) over the measured training throughput of one GPU, plus a fixed
start-up overhead (scheduling, image pull, reading the shard).
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

from acgan.errors import UserError
from acgan.settings import MAX_STEPS

# bench/RESULTS.md, the training step's row: ">= 8000 on one H100 at 128px", the target; its GPU figure is pending.
TARGET_IMAGES_PER_SECOND = 8000.0


class PlanInput(BaseModel):
    """The run to plan, each field a flag of `acgan plan` (the defaults: the paper's ImageNet run)."""

    model_config = ConfigDict(extra="forbid")

    classes: int = Field(1000, ge=1, description="classes in the data set (ImageNet's 1000)")
    classes_per_split: int = Field(10, ge=1, description="classes per split; the paper: 10")
    steps: int = Field(50_000, ge=1, le=MAX_STEPS, description="training steps per split; the paper: 50000")
    batch_size: int = Field(100, ge=1, description="images per step; the paper: 100")
    gpus: int = Field(16, ge=1, description="GPUs available to the run")
    gpus_per_node: int = Field(8, ge=1, description="GPUs of each node")
    parallelism: int = Field(16, ge=1, description="the compiled pipeline's parallelism")
    images_per_second: float = Field(TARGET_IMAGES_PER_SECOND, gt=0, description="training throughput of one GPU "
                                     "(the images/s that `acgan train-split` reports, or `acgan bench --device cuda "
                                     "--only training` measures); the default is the project's target for one H100 "
                                     "at 128 px, not a measurement: bench/RESULTS.md has none from a GPU yet")
    task_overhead_s: float = Field(300.0, ge=0, description="start-up per task: scheduling, image pull, data loading")
    target_hours: float | None = Field(None, gt=0, description="wanted wall time: also print the GPU nodes it needs")


class Plan(BaseModel):
    splits: int
    hours_per_split: float
    gpu_hours: float
    concurrent_tasks: int
    waves: int
    wall_hours: float
    nodes: int
    target_hours: float | None
    concurrent_for_target: int | None
    nodes_for_target: int | None
    notes: list[str]


def make_plan(p: PlanInput) -> Plan:
    if p.classes_per_split > p.classes:
        raise UserError(f"--classes-per-split {p.classes_per_split} is larger than --classes {p.classes}")
    splits = math.ceil(p.classes / p.classes_per_split)
    hours = (p.steps * p.batch_size / p.images_per_second + p.task_overhead_s) / 3600
    concurrent = min(p.gpus, p.parallelism, splits)
    waves = math.ceil(splits / concurrent)
    notes = []
    if p.gpus > splits:
        notes.append(f"{p.gpus - splits} of the {p.gpus} GPUs stay idle: the run has only {splits} splits")
    if p.parallelism < min(p.gpus, splits):
        notes.append(f"the pipeline's parallelism {p.parallelism} leaves {min(p.gpus, splits) - p.parallelism} GPUs "
                     "idle: compile with a larger --parallelism (and raise the namespace's GPU quota with it)")
    idle_in_last_wave = waves * concurrent - splits
    if idle_in_last_wave and waves > 1:
        notes.append(f"the last wave runs {concurrent - idle_in_last_wave} tasks on {concurrent} GPUs")
    target_concurrent = target_nodes = None
    if p.target_hours is not None:
        per_gpu = math.floor(p.target_hours / hours)
        if per_gpu == 0:
            notes.append(f"no node count meets {p.target_hours:g} h: one split alone takes {hours:.2f} h; "
                         "train fewer steps or on faster GPUs")
        else:
            target_concurrent = math.ceil(splits / per_gpu)
            target_nodes = math.ceil(target_concurrent / p.gpus_per_node)
            if target_concurrent > p.parallelism:
                notes.append(f"meeting {p.target_hours:g} h needs parallelism {target_concurrent}: compile with "
                             f"--parallelism {target_concurrent}")
    return Plan(splits=splits, hours_per_split=hours, gpu_hours=splits * hours, concurrent_tasks=concurrent,
                waves=waves, wall_hours=waves * hours, nodes=math.ceil(concurrent / p.gpus_per_node),
                target_hours=p.target_hours, concurrent_for_target=target_concurrent, nodes_for_target=target_nodes,
                notes=notes)


def plan_table(p: PlanInput, plan: Plan) -> list[tuple[str, str]]:
    rows = [
        ("splits (one GPU task each)", f"{plan.splits} = ceil({p.classes} classes / {p.classes_per_split})"),
        ("images per split", f"{p.steps * p.batch_size:,} = {p.steps:,} steps x batch {p.batch_size}"),
        ("throughput per GPU", f"{p.images_per_second:,.{0 if p.images_per_second >= 100 else 1}f} images/s"),
        ("time per split", f"{plan.hours_per_split:.2f} h (incl. {p.task_overhead_s:.0f} s start-up)"),
        ("GPU-hours", f"{plan.gpu_hours:,.1f}"),
        ("tasks at once", f"{plan.concurrent_tasks} = min({p.gpus} GPUs, parallelism {p.parallelism}, "
                          f"{plan.splits} splits)"),
        ("waves", f"{plan.waves}"),
        ("wall time", f"{plan.wall_hours:.2f} h"),
        ("GPU nodes", f"{plan.nodes} x {p.gpus_per_node} GPUs"),
    ]
    if plan.nodes_for_target is not None:
        rows.append((f"for {p.target_hours:g} h wall time", f"{plan.concurrent_for_target} GPUs at once = "
                     f"{plan.nodes_for_target} nodes x {p.gpus_per_node} GPUs"))
    return rows
