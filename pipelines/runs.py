"""Compile, run locally, submit and rerun the pipeline: plain functions under the `acgan` command.

The KFP client's environment is read here and nowhere else: KFP_TOKEN (a bearer token) when set; otherwise kfp.Client
uses the in-cluster service account token or the local kube config, as it does by default.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
import re
import sys
import time
from pathlib import Path

from components.errors import UserError
from components.experiment import load_settings, split_statuses
from components.settings import LOCAL_PARALLELISM, ClusterSettings, RunSettings
from components.store import open_store
from pipelines.acgan_ensemble import PIPELINE_NAME, build_pipeline

log = logging.getLogger(__name__)
SERVICE_ACCOUNT = "acgan-pipeline"  # manifests/base/core/rbac.yaml


def pipeline_arguments(settings: RunSettings) -> dict:
    """Pipeline parameters from validated settings (KFP strings have no None)."""
    return {**settings.model_dump(), "source": settings.source or "", "class_list": settings.class_list or "",
            "preset": settings.preset or ""}


def compile_pipeline(cluster: ClusterSettings, out: Path, preset: str = "paper") -> Path:
    """The pipeline as YAML; its parameters' defaults are `preset`'s values."""
    from kfp import compiler

    if not out.parent.is_dir():
        raise UserError(f"-o {out}: directory {out.parent} does not exist")
    compiler.Compiler().compile(build_pipeline(cluster, preset), package_path=str(out))
    return out


def run_local(settings: RunSettings, pipeline_root: Path, parallelism: int = LOCAL_PARALLELISM,
              quiet: bool = False) -> dict:
    """The whole pipeline on this machine through kfp.local: every task a subprocess of this Python.
    `parallelism` training tasks run at once and share the cores. Small convolutions use threads poorly: two splits
    on one thread each train about 1.27x faster on 2 cores than one after the other on two threads each.
    `quiet`: each task's output goes to a log file under `pipeline_root/logs/`, and one progress display to stderr
    (pipelines/console.py); a failed task's last lines are shown."""
    from kfp import local

    from pipelines.console import quiet_run, tail

    if not settings.store.startswith("s3://"):
        settings = settings.model_copy(update={"store": str(Path(settings.store).expanduser().resolve())})
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root.resolve()),
               raise_on_error=True)
    # kfp.local indents each task's output by swapping builtins.print and restoring the one it saw; tasks running at
    # once save each other's wrapper, and the last to finish can leave print indented for the rest of this process.
    original_print = builtins.print
    logs_folder = pipeline_root.resolve() / "logs" / time.strftime("%Y%m%d-%H%M%S")
    console = (quiet_run(logs_folder, settings.splits_to_train, settings.steps, sys.stderr) if quiet
               else contextlib.nullcontext())
    try:
        with console as logs:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            threads = max(1, cores // min(parallelism, settings.splits_to_train or parallelism))
            build_pipeline(ClusterSettings(parallelism=parallelism, train_threads=threads), settings.preset)(
                **pipeline_arguments(settings))
    except RuntimeError as e:
        failed = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).partition("Inner task failed: ")[2].rstrip(".")
        where = "its log is above"
        failed_log = logs.failed_log(failed.strip("'")) if quiet else None
        if failed_log is not None:
            print(f"the last lines of {failed_log}:\n{tail(failed_log)}", file=sys.stderr)
            where = f"its log: {failed_log}"
        raise UserError(f"the local pipeline run failed (task {failed or 'unknown'}); {where}. Completed "
                        f"splits are kept: `acgan rerun --store {settings.store} --local` trains only the rest") from None
    finally:
        builtins.print = original_print
    uri = open_store(settings.store).uri
    return {"store": settings.store, "ensemble": f"{uri}/ensemble.json", "samples": f"{uri}/eval/samples-split-*.png",
            "metrics": f"{uri}/eval/metrics.json", "report": f"{uri}/eval/report.html",
            "pipeline_root": str(pipeline_root), **({"logs": str(logs_folder)} if quiet else {})}


def kfp_client(host: str, namespace: str | None):
    import kfp

    return kfp.Client(host=host, namespace=namespace, existing_token=os.environ.get("KFP_TOKEN"))


def submit(settings: RunSettings, cluster: ClusterSettings, host: str, namespace: str | None = None,
           experiment: str = PIPELINE_NAME, run_name: str | None = None, pipeline_id: str | None = None,
           service_account: str | None = SERVICE_ACCOUNT) -> dict:
    """Start a run on a KFP server: from an uploaded pipeline when `pipeline_id` is given, else compiled here.
    The run's pods use `service_account` (manifests/base/core/rbac.yaml); None leaves KFP's default."""
    if not settings.store.startswith("s3://"):
        raise UserError(f"--store {settings.store}: a cluster run needs object storage (s3://BUCKET/PREFIX), "
                        "which every training pod can reach")
    arguments = pipeline_arguments(settings)
    run_name = run_name or f"{PIPELINE_NAME} {settings.store}"
    try:
        client = kfp_client(host, namespace)
        if pipeline_id:
            exp = client.create_experiment(experiment, namespace=namespace)
            run = client.run_pipeline(experiment_id=exp.experiment_id, job_name=run_name, pipeline_id=pipeline_id,
                                      params=arguments, service_account=service_account)
        else:
            run = client.create_run_from_pipeline_func(build_pipeline(cluster, settings.preset), arguments=arguments,
                                                       run_name=run_name, experiment_name=experiment,
                                                       namespace=namespace, service_account=service_account)
    except Exception as e:
        raise UserError(describe_kfp_error(e, host)) from None
    return {"run_id": run.run_id, "host": host, "store": settings.store}


def describe_kfp_error(e: Exception, host: str) -> str:
    status = getattr(e, "status", None)
    if status in (401, 403):
        return f"KFP at {host} rejected the credentials (HTTP {status}): set KFP_TOKEN or check your kube config"
    if status is not None:
        return f"KFP at {host} refused the request (HTTP {status}: {getattr(e, 'reason', '')})"
    return f"KFP at {host} is unreachable ({type(e).__name__}): check --host and your network"


def rerun(store_uri: str, host: str | None = None, local: bool = False, cluster: ClusterSettings | None = None,
          pipeline_root: Path = Path("acgan-local-runs"), namespace: str | None = None,
          parallelism: int = LOCAL_PARALLELISM,
          service_account: str | None = SERVICE_ACCOUNT) -> dict:
    """Train only the splits that are not complete (each resumes from its checkpoints), then re-assemble."""
    if (host is None) == (not local):
        raise UserError("rerun needs exactly one of --host URL (a KFP server) or --local (this machine)")
    store = open_store(store_uri)
    store.ensure_ready()
    settings = load_settings(store)
    statuses = split_statuses(store, verify=True)  # checksums: a damaged newest checkpoint is trained again
    todo = [s.split for s in statuses if s.state in ("incomplete", "not started")]
    busy = [s for s in statuses if s.state == "training"]
    if busy:
        described = ", ".join(f"{s.split} ({s.trainer})" for s in busy)
        if not todo:
            raise UserError(f"splits {described} are being trained now (their leases are live): nothing else to "
                            "rerun; wait for them, or run `acgan status` once they stop")
        log.warning("not starting splits being trained now (live leases): %s", described)
    if not todo:
        from components.ensemble import assemble_ensemble

        manifest = assemble_ensemble(store, settings.steps)
        return {"trained": [], "ensemble": f"{store.uri}/ensemble.json", "classes": len(manifest.classes)}
    # The store given here, not the one recorded: a store may have been moved, copied or mounted elsewhere.
    settings = settings.model_copy(update={"split_ids": todo, "store": store_uri})
    result = run_local(settings, pipeline_root, parallelism) if local else submit(settings, cluster or ClusterSettings(), host,
                                                                     namespace, service_account=service_account)
    return {**result, "trained": todo, "left_to_their_trainers": [s.split for s in busy]}
