"""Compile, run locally, submit and rerun the pipeline: plain functions under the `acgan` command. The KFP client
they submit with, and its environment, are pipelines/kfp_client.py's."""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from acgan.cluster_settings import ClusterSettings
from acgan.ensemble import assemble_ensemble
from acgan.errors import UserError, first_problem, rerun_command
from acgan.experiment import check_analyses, check_settings_fit_store, load_settings, splits_to_rerun
from acgan.layout import ENSEMBLE_KEY, METRICS_KEY, REPORT_KEY, SAMPLE_GRID_PREFIX, SUBMISSION_KEY
from acgan.lease import RunLease
from acgan.process import local_run_environment, task_failures
from acgan.settings import LEASE_SECONDS, RunSettings
from acgan.store import Store, open_store, read_model, write_json
from pipelines.acgan_ensemble import PIPELINE_NAME, build_pipeline, parameter_type
from pipelines.kfp_client import describe_kfp_error, kfp_client
from pipelines.launch_settings import KfpTarget, LocalSettings, SubmitSettings
from pipelines.stopping import StopOnSignal, TaskRefused

log = logging.getLogger(__name__)
LOCAL_RETRIES = 1  # `acgan run`: one more attempt of a failed task (a bad input fails twice, fast)


def pipeline_arguments(settings: RunSettings) -> dict:
    """Pipeline parameters from validated settings: a string parameter's value as text, "" for None."""
    def value(name: str, v):
        if parameter_type(RunSettings.model_fields[name].annotation) is not str:
            return v
        return "" if v is None else str(v)

    return {name: value(name, v) for name, v in settings.model_dump().items()}


def compile_pipeline(cluster: ClusterSettings, out: Path, preset: str = "paper") -> Path:
    """The pipeline as YAML; its parameters' defaults are `preset`'s values."""
    from kfp import compiler

    if not out.parent.is_dir():
        raise UserError(f"-o {out}: directory {out.parent} does not exist")
    compiler.Compiler().compile(build_pipeline(cluster, preset), package_path=str(out))
    return out


def run_local(settings: RunSettings, *, local: LocalSettings = LocalSettings(), quiet: bool = False,
              trainer_restarts: int | None = None) -> dict:
    """The whole pipeline on this machine through kfp.local: every task a subprocess of this Python, `local.parallelism`
    training tasks at once sharing the cores (`local_cluster`). `quiet`: each task's output goes to a log file under
    `pipeline_root/logs/`, and one progress display to stderr (pipelines/console.py); a failed task's last lines are
    shown. One SIGINT or SIGTERM stops the run and its tasks (pipelines/stopping.py); a second local run on the store
    stops at once (its `RunLease`), and the tasks of one killed outright end with it (acgan/process.py). Settings that
    cannot continue what the store holds are refused before anything is written. `trainer_restarts`:
    ClusterSettings' default unless given."""
    if not settings.store.startswith("s3://"):
        settings = settings.model_copy(update={"store": str(Path(settings.store).expanduser().resolve())})
    check_analyses(settings)  # here rather than by the plan's task, after kfp.local has started
    store = open_store(settings.store)
    check_settings_fit_store(store, settings)
    store.ensure_ready(create=True)
    pipeline_root = local.pipeline_root.resolve()
    logs = pipeline_root / "logs" / time.strftime("%Y%m%d-%H%M%S")
    cluster = local_cluster(settings, local.parallelism, trainer_restarts)
    with _run_lease(store), _print_kept():  # a second local run on this store stops here, before it starts a task
        events = _run_pipeline(settings, cluster, pipeline_root, logs, quiet)
    uri = store.uri
    return {"store": settings.store, "ensemble": f"{uri}/{ENSEMBLE_KEY}", "samples": f"{uri}/{SAMPLE_GRID_PREFIX}*.png",
            "metrics": f"{uri}/{METRICS_KEY}", "report": f"{uri}/{REPORT_KEY}",
            "pipeline_root": str(local.pipeline_root), "progress": str(events),
            **({"logs": str(logs)} if quiet else {})}


def local_cluster(settings: RunSettings, parallelism: int, trainer_restarts: int | None) -> ClusterSettings:
    """The cluster settings of a local run: `parallelism` training tasks sharing this machine's cores, a thread each
    where they fill them (small convolutions use threads poorly: two splits on one thread each train about 1.27x
    faster on 2 cores than one after the other on two threads each). A retry at once: a lease left by a killed local
    trainer is stale as soon as its process is gone. No heal passes: kfp.local retries a failed task itself, and the
    run ends naming `acgan rerun`."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = max(1, cores // min(parallelism, settings.splits_to_train or parallelism))
    restarts = {} if trainer_restarts is None else {"trainer_restarts": trainer_restarts}
    return ClusterSettings(parallelism=parallelism, train_threads=threads, retries=LOCAL_RETRIES,
                           retry_backoff_seconds=0, heal_passes=0, **restarts)


@contextlib.contextmanager
def _run_lease(store: Store) -> Iterator[None]:
    """Inside: this run holds the store's `RunLease`."""
    lease = RunLease(store, LEASE_SECONDS)
    lease.acquire()
    try:
        yield
    finally:
        lease.release()


@contextlib.contextmanager
def _print_kept() -> Iterator[None]:
    """kfp.local indents each task's output by swapping builtins.print and restoring the one it saw; tasks running at
    once save each other's wrapper, and the last to finish can leave print indented for the rest of this process:
    the print of before is put back after."""
    original = builtins.print
    try:
        yield
    finally:
        builtins.print = original


def _run_pipeline(settings: RunSettings, cluster: ClusterSettings, pipeline_root: Path, logs: Path,
                  quiet: bool) -> Path:
    """The pipeline through kfp.local, its progress events in the events file under `logs` returned; `quiet`: each
    task's output in a file there and one progress display on stderr (pipelines/console.py). A signal stops it
    (pipelines/stopping.py); a failed task ends it in one line (`_run_failed`)."""
    from kfp import local as kfp_local

    from pipelines.console import progress_events, quiet_run

    kfp_local.init(runner=kfp_local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root),
                   raise_on_error=True)
    console = (quiet_run(logs, settings.splits_to_train, settings.steps, sys.stderr) if quiet
               else contextlib.nullcontext())
    stop = StopOnSignal(settings.store)
    with progress_events(logs) as events, console as task_logs, stop, local_run_environment() as failures:
        stop.progress = task_logs.progress if quiet else None
        try:
            build_pipeline(cluster, settings.preset)(**pipeline_arguments(settings))
        except (RuntimeError, TaskRefused) as e:
            if stop.signum is not None:
                raise stop.outcome() from None
            raise _run_failed(e, task_failures(failures), task_logs, settings.store) from None
    return events


def _run_failed(e: Exception, reasons: list[dict], logs, store: str) -> UserError:
    """The last line of a local run whose task failed: the task, its own one-line reason (the first recorded: a
    trainer's, before its task's), where its log is, and the command that continues."""
    from pipelines.console import failed_task, tail

    failed = failed_task(e)
    task, where = repr(failed) if failed else "unknown", "its log is above"
    failed_log = logs.failed_log(failed) if logs is not None else None
    if failed_log is not None:
        print(f"the last lines of {failed_log}:\n{tail(failed_log)}", file=sys.stderr)
        where = f"its log: {failed_log}"
    reason = f": {reasons[0]['reason']}" if reasons else ""
    return UserError(f"the local pipeline run failed (task {task}){reason}; {where}. Completed splits are kept: "
                     f"{rerun_command(store)} trains only the rest")


class Submission(KfpTarget):
    """What `acgan submit` used, kept in the store so that `acgan rerun` runs the same pipeline the same way."""

    cluster: ClusterSettings


def load_submission(store: Store) -> Submission | None:
    if not store.exists(SUBMISSION_KEY):
        return None
    return read_model(store, SUBMISSION_KEY, Submission, "correct the file, or delete it and give the compile "
                      "options to `acgan rerun`")


def record_submission(store_uri: str, submission: Submission) -> None:
    """Best effort: the store may be reachable only from the cluster's pods; then rerun needs the options again."""
    try:
        write_json(open_store(store_uri), SUBMISSION_KEY, submission.model_dump())
    except Exception as e:  # noqa: BLE001 - the run is started either way; say what rerun will lack
        log.warning("could not record the cluster settings in %s/%s (%s): `acgan rerun` will need the compile "
                    "options again", store_uri, SUBMISSION_KEY, type(e).__name__)


def run_splits(settings: RunSettings) -> list[int] | None:
    """The splits a run trains, where known before it starts: its split_ids, else every split of the plan when the
    data set's classes are known (not a folder's, which its plan lists in the cluster)."""
    return settings.split_ids or (list(range(settings.splits_to_train)) if settings.splits_to_train else None)


def check_workflow_size(settings: RunSettings, cluster: ClusterSettings, splits: int | None) -> None:
    """Refuse a run whose Argo workflow would outgrow Argo's MAX_WORKFLOW_SIZE (pipelines/workflow_size.py), naming
    the batch size that fits; the first pass and every heal pass over all its splits counted."""
    import tempfile

    import yaml

    from pipelines.workflow_size import MAX_WORKFLOW_SIZE, size_model

    with tempfile.TemporaryDirectory() as folder:
        spec, platform = yaml.safe_load_all(compile_pipeline(cluster, Path(folder) / "p.yaml",
                                                             settings.preset).read_text())
    fixed, per_split = size_model(spec, platform, 1 + cluster.heal_passes)
    batch = max(1, (MAX_WORKFLOW_SIZE - fixed) // per_split)
    if splits is None:
        log.warning("the number of splits is not known before the plan of a folder data set: a run of more than "
                    "%d splits cannot be one Argo workflow; then give --split-ids, or `acgan rerun --batch %d` once "
                    "the plan is made (docs/operators.md, section 5)", batch, batch)
    elif fixed + per_split * splits > MAX_WORKFLOW_SIZE:
        raise UserError(f"a run of {splits} splits is too large for one Argo workflow: about "
                        f"{(fixed + per_split * splits) / 2**20:.1f} MiB with its node status compressed, over "
                        f"Argo's {MAX_WORKFLOW_SIZE // 2**20} MiB, and KFP's install offloads no node status: "
                        f"submit it as runs of at most {batch} splits with `--batch {batch}` "
                        "(docs/operators.md, section 5)")


def submit(settings: RunSettings, *, cluster: ClusterSettings, target: KfpTarget,
           submission: SubmitSettings) -> dict:
    """Start a run on the KFP server `submission.host`: from an uploaded pipeline when `target.pipeline_id` is given,
    else compiled here. The run's pods use `target.service_account` (manifests/base/core/rbac.yaml); None leaves
    KFP's default. `submission.preflight` first asks the Kubernetes API whether the namespace where KFP will run the
    pods (`kubeflow` on standalone KFP, the profile's on multi-user KFP) holds what they need (pipelines/preflight.py),
    once, before the first run. A run whose workflow would outgrow Argo's limit is refused before anything is
    submitted; `submission.batch` submits the splits as runs of at most that many."""
    check_analyses(settings)  # here rather than by the run's first pod
    if not settings.store.startswith("s3://"):
        raise UserError(f"--store {settings.store}: a cluster run needs object storage (s3://BUCKET/PREFIX), "
                        "which every training pod can reach")
    splits, batch = run_splits(settings), submission.batch
    if batch and splits is None:
        raise UserError(f"--batch {batch}: the splits of a folder data set are known only once the plan is made: "
                        "give --split-ids, or submit once without --batch and `acgan rerun --batch` the rest")
    batches = [splits[i:i + batch] for i in range(0, len(splits), batch)] if batch else [None]
    check_workflow_size(settings, cluster, len(batches[0]) if batch else splits and len(splits))
    name = submission.run_name or f"{PIPELINE_NAME} {settings.store}"
    runs = [submit_run(settings if part is None else settings.model_copy(update={"split_ids": part}),
                       cluster=cluster, target=target, submission=submission, preflight=submission.preflight and i == 0,
                       run_name=name if part is None else f"{name} (splits {part[0]}-{part[-1]})")
            for i, part in enumerate(batches)]
    if batch:
        return {"run_ids": [r["run_id"] for r in runs], "batches": batches, "host": submission.host,
                "store": settings.store}
    return runs[0]


def submit_run(settings: RunSettings, *, cluster: ClusterSettings, target: KfpTarget, submission: SubmitSettings,
               preflight: bool, run_name: str) -> dict:
    """One KFP run of the pipeline with `settings` (after the preflight, where asked); records how it was submitted
    in the store."""
    arguments, host = pipeline_arguments(settings), submission.host
    try:
        client = kfp_client(host, target.namespace)
        if preflight:
            from pipelines.preflight import kfp_pods_namespace, preflight as check_namespace

            check_namespace(cluster, kfp_pods_namespace(client, host, target.namespace), submission.require_gpu_quota)
        if target.pipeline_id:
            exp = client.create_experiment(target.experiment, namespace=target.namespace)
            run = client.run_pipeline(experiment_id=exp.experiment_id, job_name=run_name,
                                      pipeline_id=target.pipeline_id, params=arguments,
                                      service_account=target.service_account)
        else:
            run = client.create_run_from_pipeline_func(
                build_pipeline(cluster, settings.preset), arguments=arguments, run_name=run_name,
                experiment_name=target.experiment, namespace=target.namespace,
                service_account=target.service_account)
    except UserError:
        raise
    except Exception as e:
        raise UserError(describe_kfp_error(e, host)) from None
    record_submission(settings.store, Submission(cluster=cluster, **target.model_dump()))
    return {"run_id": run.run_id, "host": host, "store": settings.store}


class RecordedChanges(BaseModel):
    """What `acgan rerun` replaces of what the store recorded, each a mapping of the settings given (validated where
    applied): the run's `CompileSetting` (compile off where compiling failed), and on a cluster the
    `ClusterSettings` and `KfpTarget` that `acgan submit` recorded."""

    model_config = ConfigDict(extra="forbid")

    run: dict = Field(default_factory=dict)
    cluster: dict = Field(default_factory=dict)
    target: dict = Field(default_factory=dict)


def rerun(store: Store, *, local: LocalSettings | None = None, submission: SubmitSettings | None = None,
          changes: RecordedChanges = RecordedChanges(), quiet: bool = False) -> dict:
    """Train only the splits that are not complete (each resumes from its checkpoints), then re-assemble: on this
    machine (`local`, shown as `acgan run` shows it when `quiet`) or on the KFP server of `submission`, exactly one.
    The run's recorded settings apply, and on a cluster the compile and submit settings recorded in the store
    (`cluster.json`), each of `changes` replacing its recorded value. On a cluster the namespace is checked first and
    the run refused or cut into batches as `acgan submit` does."""
    if (submission is None) == (local is None):
        raise UserError("rerun needs exactly one of --host URL (a KFP server) or --local (this machine)")
    store.ensure_ready()
    settings = load_settings(store)
    todo, busy = splits_to_rerun(store)
    if busy:
        log.warning("not starting splits being trained now (live leases): %s",
                    ", ".join(f"{s.split} ({s.trainer})" for s in busy))
    if not todo:
        manifest = assemble_ensemble(store, settings.steps)
        return {"trained": [], "ensemble": f"{store.uri}/{ENSEMBLE_KEY}", "classes": len(manifest.classes)}
    # The store given here, not the one recorded: a store may have been moved, copied or mounted elsewhere.
    settings = settings.model_copy(update={**changes.run, "split_ids": todo, "store": store.uri})
    if local is not None:
        # Of the cluster settings only the trainer's restarts apply on this machine: any other is refused, not ignored.
        cluster_only = sorted(set(changes.cluster) - {"trainer_restarts"})
        if cluster_only:
            raise UserError(f"--{cluster_only[0].replace('_', '-')} is a cluster setting; with --local it would have "
                            "no effect: leave it out, or rerun on a cluster with --host")
        result = run_local(settings, local=local, quiet=quiet, trainer_restarts=changes.cluster.get("trainer_restarts"))
    else:
        recorded = load_submission(store) or Submission(cluster=ClusterSettings())
        try:
            cluster = ClusterSettings.model_validate({**recorded.cluster.model_dump(), **changes.cluster})
            target = KfpTarget.model_validate({**recorded.model_dump(exclude={"cluster"}), **changes.target})
        except ValidationError as e:
            key, msg = first_problem(e)
            raise UserError(f"--{key.replace('_', '-')}: {msg}") from None
        result = submit(settings, cluster=cluster, target=target, submission=submission)
    return {**result, "trained": todo, "left_to_their_trainers": [s.split for s in busy]}
