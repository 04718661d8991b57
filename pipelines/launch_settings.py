"""How a run is started, beside what it trains (acgan/settings.py) and where its tasks run (acgan/cluster_settings.py):
on this machine through kfp.local (`LocalSettings`: `acgan run`, `acgan rerun --local`), or on a KFP server
(`KfpTarget`, recorded in the store for `acgan rerun`; `SubmitSettings`, given at each submission). Each field is a
flag of the commands that take it (acgan_cli/flags.py) and the library's one default."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from acgan.settings import LOCAL_PARALLELISM
from pipelines.acgan_ensemble import PIPELINE_NAME

SERVICE_ACCOUNT = "acgan-pipeline"  # manifests/base/core/rbac.yaml


class LocalSettings(BaseModel):
    """A run on this machine: every task a subprocess of this Python (pipelines/runs.py, `run_local`)."""

    model_config = ConfigDict(extra="forbid")

    pipeline_root: Path = Field(Path("acgan-local-runs"), description="kfp.local's task outputs")
    parallelism: int = Field(LOCAL_PARALLELISM, ge=1, description="training tasks at once on this machine, sharing "
                             "its cores")


class KfpTarget(BaseModel):
    """Where on a KFP server a run goes: `acgan submit`'s flags, recorded in the store with the cluster settings
    (`Submission`) so that `acgan rerun` runs the same pipeline the same way."""

    model_config = ConfigDict(extra="forbid")

    namespace: str | None = Field(None, description="multi-user KFP: the profile namespace the run's pods run in; "
                                  "standalone KFP runs them in its own, kubeflow")
    experiment: str = Field(PIPELINE_NAME, min_length=1, description="KFP experiment name")
    pipeline_id: str | None = Field(None, description="run this already uploaded pipeline instead of compiling one")
    service_account: Annotated[str | None, BeforeValidator(lambda v: v or None)] = Field(
        SERVICE_ACCOUNT, description="the run's Kubernetes ServiceAccount (from manifests/; '' for KFP's)")


class SubmitSettings(BaseModel):
    """How one `acgan submit` or cluster `acgan rerun` submits: its server, its checks and how it cuts the run's
    splits into KFP runs; each field a flag of both, none recorded."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(min_length=1, description="the KFP API endpoint, e.g. https://kfp.example/pipeline")
    run_name: str | None = Field(None, description="the KFP run's name (default: the pipeline's and the store's)")
    preflight: bool = Field(True, description="first ask the Kubernetes API (your kube config) whether the namespace "
                            "has the store's Secret and ConfigMap and the Kueue LocalQueue; --no-preflight skips it")
    require_gpu_quota: bool = Field(False, description="preflight: also require a ResourceQuota on "
                                    "requests.nvidia.com/gpu that admits a training task")
    batch: int | None = Field(None, ge=1, description="at most this many splits per KFP run: the splits are "
                              "submitted as several runs into the one store, and the run that completes the last "
                              "split assembles and evaluates the whole ensemble; for runs whose Argo workflow would "
                              "outgrow Argo's 1 MiB (docs/operators.md, section 5); unset: one run")
