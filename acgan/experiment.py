"""An experiment is a store: its settings (`experiment.json`), plan, data, and each split's checkpoints.

The store is the source of truth for what is done. A failed task is retried by the cluster; what its retries did not
finish is rerun by asking the store which splits are not complete and training only those (`acgan rerun`, or a clone
of the run in the KFP UI, whose complete splits return at once); each resumes from its checkpoints.
"""

from __future__ import annotations

import json
import logging
from typing import Literal

from pydantic import BaseModel

from acgan import progress
from acgan.checkpoint import complete_steps, latest_checkpoint, verified_step
from acgan.collapse import CollapseAlarm, collapse_alarm, collapse_threshold, record_real_diversity
from acgan.data.plan import load_plan
from acgan.data.prepare import PrepareConfig, plan_data, prepare_shard
from acgan.errors import UserError, command
from acgan.layout import EXPERIMENT_KEY, META_FILE, PLAN_KEY, config_key
from acgan.lease import live_lease
from acgan.settings import DataSettings, EvalSettings, EvaluationSettings, RunSettings, TrainingSettings
from acgan.store import Store, open_store, read_json, read_model, write_json
from acgan.training.loop import TrainConfig, check_resumable, model_config_for, train_split

log = logging.getLogger(__name__)


def prepare_experiment(settings: RunSettings) -> list[int]:
    """Make the split plan (a no-op if already made), record the settings; return the split ids to train: those
    asked for (all by default), less the ones whose newest complete checkpoint is at the target already, unless
    `include_complete`. So a Clone run of the KFP UI puts only unfinished splits on GPU nodes. Each split's shard is
    then built by its own task in the fan-out (`prepare_split_data`)."""
    check_analyses(settings)
    store = open_store(settings.store)
    check_settings_fit_store(store, settings)  # before anything is written: a refused run changes nothing
    plan = plan_data(PrepareConfig(**settings.model_dump(include=set(DataSettings.model_fields))), store)
    outside = [s for s in settings.split_ids if s >= len(plan.splits)]
    if outside:
        raise UserError(f"split ids {outside} are outside the plan, which has splits 0..{len(plan.splits) - 1}")
    write_json(store, EXPERIMENT_KEY, settings.model_dump(), checksum=True)
    asked = settings.split_ids or list(range(len(plan.splits)))
    # Judged by the checkpoints' files, as the assembly judges them: one rerun retrains every damaged split.
    complete = [] if settings.include_complete else [
        s for s in asked if (step := verified_step(store, s)[0]) is not None and step >= settings.steps]
    todo = [s for s in asked if s not in complete]
    # Never an empty fan-out: KFP's driver cannot collect the outputs of a loop that ran no iteration for the
    # assembly's input (backend/src/v2/driver/resolve.go, resolveUpstreamParameters), so one complete split's task
    # runs, and returns at once.
    todo = todo or asked[:1]
    progress.emit(progress.PLAN, "progress", part=progress.FAN_OUT, total=len(todo))
    log.info("fanning out over %d of %d splits%s", len(todo), len(asked),
             f" ({len(complete)} already at their {settings.steps} steps)" if complete else "")
    return todo


def check_analyses(settings: RunSettings) -> None:
    """A UserError naming the analyses if `settings` asks for one the evaluation lacks: a run refuses it before it
    starts rather than after its training. The table is imported here, not with the module: it brings torchmetrics
    and matplotlib, which the tasks importing this module need not load."""
    from acgan.evaluation.analyses import chosen_analyses

    chosen_analyses(settings.analyses)


def check_settings_fit_store(store: Store, settings: RunSettings) -> None:
    """A UserError, before anything is written, if `settings` cannot continue what the store holds: each split's
    newest intact checkpoint must be of the same model, and keep its averaged generator (`check_resumable`)."""
    if not store.exists(PLAN_KEY):
        return
    for split in range(len(load_plan(store).splits)):
        latest = latest_checkpoint(store, split, [META_FILE])
        if latest is not None:
            model_cfg, _ = model_config_for(store, train_config(settings, split))
            check_resumable(split, json.loads(latest[1][META_FILE]), model_cfg, settings.ema_kimg)


def continued_settings(given: dict) -> RunSettings:
    """The settings of a local run on the store `given["store"]`: a store that recorded its settings
    (experiment.json) keeps them, each setting given replacing its recorded value (a preset given other than the
    recorded one applies its values instead); a new store takes the preset's. What to train this time (`split_ids`,
    `include_complete`) is never carried over."""
    store = open_store(given["store"])
    if not store.exists(EXPERIMENT_KEY):
        return RunSettings(**given)
    recorded = load_settings(store)
    if given.get("preset", recorded.preset) != recorded.preset:
        return RunSettings(**given)
    kept = recorded.model_dump(exclude={"store", "split_ids", "include_complete"})
    return RunSettings(**{**kept, **given})


def unfinished_splits(store: Store, split_ids: list[int]) -> list[int]:
    """The run's splits (`split_ids`, every split of the plan when empty) whose newest complete checkpoint is short
    of the run's target steps: what a heal pass of the pipeline trains again, each from its newest checkpoint
    (pipelines/acgan_ensemble.py, heal_stage)."""
    target = load_settings(store).steps
    splits = split_ids or list(range(len(load_plan(store).splits)))
    # Judged as the plan and the assembly judge a split: by its checkpoints' files (verified_step).
    todo = [s for s in splits if not ((step := verified_step(store, s)[0]) is not None and step >= target)]
    log.info("%d of the run's %d splits are short of their %d steps%s", len(todo), len(splits), target,
             f": {todo}" if todo else "")
    return todo


def left_to_other_runs(store: Store, split_ids: list[int]) -> list[int]:
    """The splits a batch run (`split_ids`: its own; `acgan submit --batch`) leaves to the other runs on the store:
    those not at their target when every one of its own is. Empty for a run over the whole plan, or one whose own
    splits are not all complete (its assembly then fails naming them)."""
    if not split_ids or unfinished_splits(store, split_ids):
        return []
    return [s for s in unfinished_splits(store, []) if s not in split_ids]


def load_settings(store: Store) -> RunSettings:
    if not store.exists(EXPERIMENT_KEY):
        raise UserError(f"store {store.uri} has no experiment settings (experiment.json): start it with "
                        f"{command('acgan', 'run', '--store', store.uri)} (or `acgan submit` on a cluster) first")
    return read_model(store, EXPERIMENT_KEY, RunSettings, "correct the file or start a new store", checksum=True)


def evaluation_settings(store: Store) -> EvalSettings:
    """The run's evaluation settings and seed, as recorded in the store (experiment.json)."""
    run = load_settings(store)
    return EvalSettings(**run.model_dump(include=set(EvaluationSettings.model_fields)))


def train_config(settings: RunSettings, split: int) -> TrainConfig:
    return TrainConfig(split=split, tick_every=min(100, settings.checkpoint_every),
                       **settings.model_dump(include=set(TrainingSettings.model_fields)))


class SplitStatus(BaseModel):
    split: int
    classes: list[int]
    step: int | None  # newest complete checkpoint
    target: int | None
    state: Literal["complete", "incomplete", "not started", "training"]
    trainer: str | None = None  # owner of a live lease: a task training the split now
    collapse: CollapseAlarm | None = None  # a class of its newest tick is less diverse than every real class


def split_statuses(store: Store, verify: bool = False) -> list[SplitStatus]:
    """Per split: classes, newest complete step, target steps and state. Reads markers only, unless `verify`: then
    the newest checkpoint that passes its checksums counts (what a resumed task would start from)."""
    plan = load_plan(store)
    experiment_target = load_settings(store).steps if store.exists(EXPERIMENT_KEY) else None
    threshold = collapse_threshold(store)
    out = []
    for split, members in enumerate(plan.splits):
        if verify:
            latest = latest_checkpoint(store, split)
            steps = [latest[0]] if latest else []
        else:
            steps = complete_steps(store, split)
        target = experiment_target
        if target is None and store.exists(config_key(split)):
            target = _config_steps(store, config_key(split))
        step = steps[-1] if steps else None
        state = "not started" if step is None else "complete" if target is not None and step >= target else "incomplete"
        lease = live_lease(store, split) if state != "complete" else None
        out.append(SplitStatus(split=split, classes=members, step=step, target=target,
                               state="training" if lease else state, trainer=lease.owner if lease else None,
                               collapse=collapse_alarm(store, split, threshold) if step is not None else None))
    return out



def splits_to_rerun(store: Store) -> tuple[list[int], list[SplitStatus]]:
    """What a rerun trains: the splits not started or incomplete, each from its newest checkpoint that passes its
    checksums (a damaged one is trained again); and, apart, the splits being trained now (live leases), which it
    leaves to their trainers. Splits being trained and nothing else to do: a UserError."""
    statuses = split_statuses(store, verify=True)
    todo = [s.split for s in statuses if s.state in ("incomplete", "not started")]
    busy = [s for s in statuses if s.state == "training"]
    if busy and not todo:
        described = ", ".join(f"{s.split} ({s.trainer})" for s in busy)
        raise UserError(f"splits {described} are being trained now (their leases are live): nothing else to "
                        f"rerun; wait for them, or run {command('acgan', 'status', '--store', store.uri)} once they stop")
    return todo, busy

def prepare_split_data(store: Store, split: int) -> int:
    """Build the shard of `split` unless it is complete; returns the split id (training waits for it)."""
    prepare_shard(store, split)
    record_real_diversity(store, split)  # the collapse alarm's threshold
    return split


def _config_steps(store: Store, key: str) -> int:
    """The target steps a split's config.json records."""
    config = read_json(store, key)
    steps = config.get("train", {}).get("steps") if isinstance(config, dict) and isinstance(config.get("train"),
                                                                                           dict) else None
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise UserError(f"{store.uri}/{key}: train.steps: missing or not a whole number >= 1; the file is damaged: "
                        "delete it (training writes it again)")
    return steps


def train_one_split(store: Store, split: int) -> int:
    """Train `split` with the experiment's recorded settings; returns the split id (the fan-in collects them)."""
    train_split(store, train_config(load_settings(store), split))  # train_split checks the split against the plan
    return split
