"""`train_split`: train the AC-GAN of one class split, resumable from its own checkpoints in the store.

The task's identity is (store, split), not a run id: starting it again continues from the newest complete, intact
checkpoint, so a killed or preempted task loses at most one checkpoint interval; one stopped with SIGTERM (or SIGINT:
a Ctrl-C reaches every process of a terminal's group) first saves the step it reached and exits non-zero
(`Preempted`), so that its retry resumes there. With a fixed seed on CPU
and one thread (OMP_NUM_THREADS=1), a run killed after a checkpoint and resumed ends with the same weights as an
uninterrupted one; with several threads on a loaded machine, the last bits may differ.

Progress is counted in steps (one D update and one G update on a batch). Every tick appends one JSON line to
`splits/split-NNNNN/stats.jsonl`: losses, D's source and class accuracy on real and fake images, and the mean
intra-class MS-SSIM of fixed samples per class (rising towards 1 means that class is collapsing).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import sys
import threading
import time
from typing import Iterator, Literal

import torch
from pydantic import Field, model_validator
from tqdm import tqdm

from acgan import progress
from acgan.checkpoint import (CheckpointExists, complete_steps, latest_checkpoint, prune_checkpoints,
                               quarantine_checkpoint, save_checkpoint)
from acgan.data.plan import load_plan
from acgan.data.prepare import load_shard
from acgan.errors import UserError, command, rerun_command
from acgan.layout import META_FILE, config_key, shard_info_key, shard_key, split_prefix
from acgan.lease import SplitBusy, SplitLease
from acgan.metrics import mean_ms_ssim
from acgan.model import Discriminator, Generator, ModelConfig
from acgan.settings import LEASE_SECONDS, MAX_STEPS, DeviceSetting, ModelSettings, TrainingSettings
from acgan.stats import PAIRS, SAMPLES_PER_CLASS, StatsFile
from acgan.store import Store, write_json
from acgan.training.ema import averaged_copy, ema_beta, update_ema
from acgan.training.state import pack_checkpoint, unpack_checkpoint
from acgan.training.step import STATS, FastPath, TrainStep, make_optimizers

log = logging.getLogger(__name__)
# A tick's figures shown live, by the name they are shown under: on the split's progress bar, in a pod's log line and
# in `acgan run`'s display (through the progress event, pipelines/console.py). Every figure of a tick is in its stats
# line; one entry here shows one more live.
TICK_FIGURES = {"loss_d": "loss_d", "loss_g": "loss_g", "d_class_acc_fake": "cls_fake", "ms_ssim_mean": "ms_ssim"}


class TrainConfig(TrainingSettings, DeviceSetting):
    """The spec of one split's training; saved as `config.json` beside its checkpoints. The settings a run sets are
    `TrainingSettings`' fields (the paper's values by default); these are the trainer's own."""

    split: int = Field(0, ge=0)
    beta1: float = Field(0.5, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    tick_every: int = Field(100, ge=1, le=MAX_STEPS, description="steps between stats lines")
    keep_checkpoints: int = Field(2, ge=2, description="newest complete checkpoints kept")
    stats_samples_per_class: int = Field(SAMPLES_PER_CLASS, ge=2, le=1024)
    stats_pairs: int = Field(PAIRS, ge=1)
    lease_seconds: float = Field(LEASE_SECONDS, ge=1, le=86_400, description="the split's lease expires this long "
                                 "after its last renewal (renewed every third of it): how long a killed trainer "
                                 "blocks another")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 autocast on a GPU, float32 "
                                                                            "on a CPU")

    @model_validator(mode="after")
    def _device_exists(self) -> "TrainConfig":
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device cuda was requested but no CUDA GPU is visible; use --device cpu")
        return self


class TrainingDiverged(UserError):
    pass


def model_config_for(store: Store, cfg: TrainConfig) -> tuple[ModelConfig, list[int]]:
    """The split's model: the plan's shape and classes, the run's model settings."""
    plan = load_plan(store)
    members = plan.check_split(cfg.split)
    return ModelConfig(resolution=plan.resolution, channels=plan.channels, num_classes=len(members),
                       **cfg.model_dump(include=set(ModelSettings.model_fields))), members


@torch.no_grad()
def class_diversity(G, z: torch.Tensor, y: torch.Tensor, num_classes: int, pairs: int) -> list[float]:
    """Mean MS-SSIM of G's fixed samples, per class (images in [-1, 1], so data range 2)."""
    was_training = G.training
    G.eval()
    images = G(z, y)
    G.train(was_training)
    pair_rng = torch.Generator().manual_seed(0)  # its own generator: ticks must not shift the training RNG
    return [mean_ms_ssim(images[y == k], pairs, data_range=2.0, generator=pair_rng) for k in range(num_classes)]


class Preempted(UserError):
    """SIGTERM (a spot reclaim, a drain, an eviction; a stopped `acgan run`) or SIGINT stopped the trainer after it
    saved a checkpoint. It exits non-zero so that the task counts as failed and its retry resumes from that
    checkpoint (docs/operators.md)."""


class StopRequest(threading.Event):
    """Set by the first SIGTERM or SIGINT; `signal` names it."""

    signal: str | None = None


@contextlib.contextmanager
def sigterm_requests_stop() -> Iterator[StopRequest]:
    """An event set by SIGTERM or SIGINT while the block runs; a second SIGINT is a KeyboardInterrupt (a person
    pressing Ctrl-C again does not want to wait for the checkpoint). Outside the main thread (signals cannot be
    caught there) an event that stays clear."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def request(signum: int, frame) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.signal = stop.signal or signal.Signals(signum).name
        stop.set()

    previous = {signum: signal.signal(signum, request) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def train_split(store: Store, cfg: TrainConfig) -> dict:
    """Train split `cfg.split` up to `cfg.steps` holding the split's lease; returns the last stats line (or the
    state if already done). Raises SplitBusy if another trainer holds the split, Preempted after SIGTERM or SIGINT."""
    lease = SplitLease(store, cfg.split, cfg.lease_seconds)
    with sigterm_requests_stop() as stop:
        lease.acquire()
        try:
            # Killed writes of earlier trainers left temporaries (local) or unfinished multipart uploads (S3); the
            # split is ours now, and anything older than a lease period is nobody's.
            cleaned = store.clean_temporaries(f"{split_prefix(cfg.split)}/", older_than=cfg.lease_seconds)
            if cleaned:
                log.info("split %d: removed %d unfinished write(s) of earlier trainers", cfg.split, cleaned)
            return _train(store, cfg, lease, stop)
        finally:
            lease.release()


def _train(store: Store, cfg: TrainConfig, lease: SplitLease, stop: StopRequest) -> dict:
    # Setup: model shape from the plan, data resident on the device as uint8.
    model_cfg, members = model_config_for(store, cfg)
    device = torch.device(cfg.torch_device)
    images, labels = _split_data(store, cfg.split, model_cfg, members, device)
    torch.manual_seed(cfg.seed)
    data_rng = torch.Generator(device).manual_seed(cfg.seed)
    G, D = Generator(model_cfg).to(device), Discriminator(model_cfg).to(device)
    fast = FastPath.resolve(device, cfg.precision, cfg.compile)
    opt_g, opt_d = make_optimizers(G, D, cfg.lr, (cfg.beta1, cfg.beta2), fast)
    # Before the restore: the step puts G and D in their memory layout, which the restored Adam moments must match.
    train_step = TrainStep(G, D, opt_g, opt_d, fast, cfg.d_fake_class_loss, cfg.mode_seeking, cfg.augment, data_rng)
    G_ema = averaged_copy(G) if cfg.ema_kimg > 0 else None  # the sampling snapshot (acgan/training/ema.py)

    # Resume from the newest complete, intact checkpoint of this split.
    start = _resume(store, cfg, model_cfg, G, D, opt_g, opt_d, data_rng, G_ema)
    _report(cfg, start)
    if start >= cfg.steps:
        log.info("split %d: already at step %d >= %d, nothing to train", cfg.split, start, cfg.steps)
        return {"step": start, "steps": cfg.steps, "resumed_from": start}
    stats = StatsFile(store, cfg.split, start)
    write_json(store, config_key(cfg.split), {
        "train": cfg.model_dump(), "model": model_cfg.model_dump(), "classes": members, "device": str(device),
        "fast_path": fast.model_dump(), "threads": torch.get_num_threads()})
    fixed_rng = torch.Generator(device).manual_seed(cfg.seed + 1)
    fixed_y = torch.arange(model_cfg.num_classes, device=device).repeat_interleave(cfg.stats_samples_per_class)
    fixed_z = torch.randn(len(fixed_y), model_cfg.noise_dim, generator=fixed_rng, device=device)

    def checkpoint(step: int, healthy_since: int) -> None:
        if not all(torch.isfinite(p).all() for p in [*G.parameters(), *D.parameters()]):
            raise TrainingDiverged(f"split {cfg.split} has non-finite weights at step {step}; its checkpoints up "
                                   f"to step {healthy_since} are intact: {_lower_lr(store, cfg)}")
        meta = {"step": step, "split": cfg.split, "classes": members, "model": model_cfg.model_dump(),
                "train": cfg.model_dump(), "fast_path": fast.model_dump(), "time": time.time()}
        try:  # the renewals before the upload and the marker: a trainer that lost its split commits nothing
            save_checkpoint(store, cfg.split, step, pack_checkpoint(G, D, opt_g, opt_d, data_rng, meta, G_ema),
                            fence=lease.renew)
        except CheckpointExists as e:
            raise SplitBusy(f"split {cfg.split}: {e}; another trainer holds the split, this one stops") from None
        prune_checkpoints(store, cfg.split, cfg.keep_checkpoints)  # never the assembled ensemble's

    # Main loop.
    sums = torch.zeros(len(STATS), device=device)
    tick_start, tick_step, last = time.perf_counter(), start, {}
    bar = tqdm(total=cfg.steps, initial=start, desc=f"split {cfg.split}", unit="step", disable=not sys.stderr.isatty())
    saved, done, report = start, start, progress.Throttle()
    for step in range(start + 1, cfg.steps + 1):
        if stop.is_set():
            break
        lease.check()  # lapsed (the store away longer than a period) or taken over: not one step more
        sums += train_step(*training_batch(images, labels, cfg, model_cfg, data_rng))
        if G_ema is not None:
            update_ema(G_ema, G, ema_beta(step, cfg.batch_size, cfg.ema_kimg, cfg.ema_rampup))
        done = step
        bar.update(1)
        if report.due():
            _report(cfg, step)
        is_checkpoint = step % cfg.checkpoint_every == 0 or step == cfg.steps
        if not (is_checkpoint or step % cfg.tick_every == 0):
            continue

        # Tick: check health, write a stats line; then maybe a checkpoint.
        means = dict(zip(STATS, (sums / (step - tick_step)).tolist()))
        if not (math.isfinite(means["loss_d"]) and math.isfinite(means["loss_g"])):
            raise TrainingDiverged(f"split {cfg.split} diverged between steps {tick_step} and {step} (loss_d="
                                   f"{means['loss_d']}, loss_g={means['loss_g']}); its checkpoints up to step "
                                   f"{tick_step} are intact: {_lower_lr(store, cfg)}")
        diversity = class_diversity(G, fixed_z, fixed_y, model_cfg.num_classes, cfg.stats_pairs)
        last = {"step": step, **means, "ms_ssim": dict(zip(map(str, members), diversity)),
                "ms_ssim_mean": sum(diversity) / len(diversity),
                "images_per_second": (step - tick_step) * cfg.batch_size / (time.perf_counter() - tick_start),
                "time": time.time()}
        lease.check()  # lost while this tick's figures were computed: no stats line from a trainer that lost it
        stats.append(last)
        _show_tick(bar, cfg, last)
        if is_checkpoint:
            checkpoint(step, tick_step)
            saved = step
        sums.zero_()
        tick_start, tick_step = time.perf_counter(), step
    bar.close()
    if stop.is_set() and done < cfg.steps:
        if done > saved:
            checkpoint(done, saved)
        saved_now = "with its checkpoint saved" if done > start else "before training a step"
        raise Preempted(f"split {cfg.split}: stopped by {stop.signal} at step {done} of {cfg.steps} {saved_now}; a "
                        f"retry (or {rerun_command(store.uri)}) resumes from step {done}")
    return {**last, "steps": cfg.steps, "resumed_from": start}


def _split_data(store: Store, split: int, model_cfg: ModelConfig, members: list[int],
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The split's images (uint8) and their labels as the split's own class indices, on `device`; a shard of another
    shape or with labels outside the split is refused."""
    images, labels = load_shard(store, split)
    if tuple(images.shape[1:]) != (model_cfg.channels, model_cfg.resolution, model_cfg.resolution):
        raise UserError(f"{store.uri}/{shard_key(split)} has images of shape {tuple(images.shape[1:])}, the plan "
                        f"says {model_cfg.channels}x{model_cfg.resolution}x{model_cfg.resolution}: the shard is from "
                        f"another plan: {_rebuild_shard(store, split)}")
    outside = labels[~torch.isin(labels, torch.tensor(members))]
    if len(outside):
        raise UserError(f"{store.uri}/{shard_key(split)}: labels: {len(outside)} label(s) outside split "
                        f"{split}'s classes {members} (e.g. {outside[0].item()}): the shard is damaged or from "
                        f"another plan: {_rebuild_shard(store, split)}")
    to_local = torch.full((max(members) + 1,), -1, dtype=torch.long)
    to_local[torch.tensor(members)] = torch.arange(len(members))
    return images.to(device), to_local[labels].to(device)


def _resume(store: Store, cfg: TrainConfig, model_cfg: ModelConfig, G, D, opt_g, opt_d,
            data_rng: torch.Generator, G_ema) -> int:
    """Restore the newest complete, intact checkpoint of the split, if any, and move newer ones that failed
    verification out of the way (their steps are trained again); returns the step to continue from."""
    start, latest = 0, latest_checkpoint(store, cfg.split)
    if latest is not None:
        step, files = latest
        check_resumable(cfg.split, json.loads(files[META_FILE]), model_cfg, cfg.ema_kimg)
        unpack_checkpoint(files, G, D, opt_g, opt_d, data_rng, G_ema)
        start = step
    for newer in [s for s in complete_steps(store, cfg.split) if s > start]:
        quarantine_checkpoint(store, cfg.split, newer)  # failed verification: its step is trained again
    if latest is not None:
        log.info("split %d: resuming from step %d", cfg.split, start)
    return start


def check_resumable(split: int, meta: dict, model_cfg: ModelConfig, ema_kimg: float) -> None:
    """A UserError unless settings giving `model_cfg` and `ema_kimg` can continue the checkpoint whose meta is `meta`:
    the same model shape, and an averaged generator kept where the checkpoint has one (dropping it loses state)."""
    saved = ModelConfig.model_validate(meta["model"])
    shape = set(ModelConfig.SHAPE_FIELDS)
    if saved.model_dump(include=shape) != model_cfg.model_dump(include=shape):
        raise UserError(f"split {split} has checkpoints of a different model ({_describe(saved)}) than "
                        f"requested ({_describe(model_cfg)}): use the original settings or a new store")
    if meta.get("ema") and ema_kimg == 0:
        recorded = meta.get("train", {}).get("ema_kimg")
        raise UserError(f"split {split}'s checkpoints keep an averaged generator (--ema-kimg {recorded}); "
                        "--ema-kimg 0 would drop it: leave --ema-kimg out to keep the recorded value, or use a new "
                        "store")


def training_batch(images: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig, model_cfg: ModelConfig,
                   rng: torch.Generator) -> tuple[torch.Tensor, ...]:
    """One step's real images and labels, noise and fake labels, drawn from the data generator."""
    device, K = images.device, model_cfg.num_classes
    idx = torch.randint(images.shape[0], (cfg.batch_size,), generator=rng, device=device)
    x_real = images[idx].float() / 127.5 - 1.0  # (B, C, R, R) in [-1, 1], the scale of G's tanh
    z = torch.randn(cfg.batch_size, model_cfg.noise_dim, generator=rng, device=device)
    if cfg.mode_seeking:  # pairs of the same class, the halves of the batch, for the mode-seeking term
        y_half = torch.randint(K, ((cfg.batch_size + 1) // 2,), generator=rng, device=device)
        y_fake = torch.cat([y_half, y_half])[:cfg.batch_size]
    else:
        y_fake = torch.randint(K, (cfg.batch_size,), generator=rng, device=device)
    return x_real, labels[idx], z, y_fake


def _report(cfg: TrainConfig, step: int, figures: dict[str, float] | None = None) -> None:
    """The split's step as a progress event (acgan/progress.py), with a tick's figures shown live."""
    progress.emit(progress.TRAIN, "progress", part=progress.STEPS, split=cfg.split, step=step, total=cfg.steps,
                  figures=figures or {})


def _show_tick(bar: tqdm, cfg: TrainConfig, tick: dict) -> None:
    """A tick as a progress event; on the progress bar in a terminal, else as a log line (a KFP pod's)."""
    figures = {shown: tick[name] for name, shown in TICK_FIGURES.items()}
    _report(cfg, tick["step"], figures)
    bar.set_postfix({shown: f"{value:.3f}" for shown, value in figures.items()})
    if bar.disable:
        log.info("split %d step %d/%d: %s (%.0f img/s)", cfg.split, tick["step"], cfg.steps,
                 " ".join(f"{shown} {value:.3f}" for shown, value in figures.items()), tick["images_per_second"])


def _lower_lr(store: Store, cfg: TrainConfig) -> str:
    """The command that continues a diverged split with half the learning rate (the store's other settings kept)."""
    return f"continue with half the learning rate: {command('acgan', 'run', '--store', store.uri, '--lr', cfg.lr / 2)}"


def _rebuild_shard(store: Store, split: int) -> str:
    return f"delete {store.uri}/{shard_info_key(split)} and run {command('acgan', 'prepare', '--store', store.uri)}"


def _describe(m: ModelConfig) -> str:
    return ", ".join(f"{name} {getattr(m, name)}" for name in ModelConfig.SHAPE_FIELDS)
