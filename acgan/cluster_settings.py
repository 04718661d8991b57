"""Where a run's tasks run on Kubernetes (`ClusterSettings`): fixed when the pipeline is compiled (`acgan compile`),
each field a flag of `acgan compile`, `submit` and `rerun`, recorded in the store by `acgan submit` for `acgan rerun`.
What a run trains is acgan/settings.py's."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from acgan.settings import LEASE_SECONDS, checked_uri

_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                        r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_PVC_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")  # a DNS subdomain, as Kubernetes names objects
_IMAGE = re.compile(r"^[a-z0-9]+([._-]{1,2}[a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-]{1,2}[a-z0-9]+)*)*"
                    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$")


def _node_selector(value):
    """The command line gives the selector as `key=value` texts (one a flag); cluster.json as a mapping."""
    if not isinstance(value, list):
        return value
    out = {}
    for pair in value:
        key, sep, label = str(pair).partition("=")
        if not sep or not key:
            raise ValueError(f"node selector {pair!r} must be key=value")
        out[key] = label
    return out


class ClusterSettings(BaseModel):
    """How the pipeline's tasks run on Kubernetes; chosen at compile time (`acgan compile`), each field a flag of
    `acgan compile`, `submit` and `rerun`."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    image: str = Field("ghcr.io/acgan-ensemble/acgan-ensemble:0.1.0", description="the project's container image "
                       "every task runs in, REGISTRY/acgan-ensemble:TAG, as your cluster pulls it: no image is "
                       "published, build and push yours (`make push IMAGE=...`, docs/operators.md)")
    parallelism: int = Field(16, ge=1, le=10_000, description="training tasks (GPUs) at once")
    gpus_per_task: int = Field(1, ge=0, le=16, description="GPUs of each training task")
    node_selector: Annotated[dict[str, str], BeforeValidator(_node_selector)] = Field(
        default_factory=lambda: {"acgan.ai/pool": "gpu"}, description="labels key=value of the GPU pool's nodes; "
                                                                     "on the command line, a flag for each")
    gpu_toleration: Annotated[str | None, BeforeValidator(lambda v: None if v == "none" else v)] = Field(
        "nvidia.com/gpu", description="taint key the GPU tasks tolerate (operator Exists); none: no toleration")
    store_secret: str = Field("acgan-store-credentials", description="Secret with AWS_ACCESS_KEY_ID / "
                                                                      "AWS_SECRET_ACCESS_KEY")
    store_config_map: str = Field("acgan-store", description="ConfigMap with ACGAN_S3_ENDPOINT")
    store_ca_config_map: str | None = Field(None, description="ConfigMap whose key ca.crt is the PEM bundle of the "
                                            "CAs that sign an https store's (or source's) certificate: mounted in "
                                            "every task, named in SSL_CERT_FILE; unset: the image's system bundle")
    timeout_seconds: int = Field(24 * 3600, ge=60, description="limit for one training task")
    train_cpu: str = Field("8", description="CPU request of each training task")
    train_threads: int | None = Field(None, ge=1, le=1024, description="CPU threads of each training task "
                                      "(OMP_NUM_THREADS); unset: the task's CPU request (train_cpu), since torch's "
                                      "default, one per core of the node, oversubscribes a large GPU node shared by "
                                      "several tasks")
    train_memory: str = Field("32G", description="memory request of each training task")
    trainer_restarts: int = Field(3, ge=0, le=20, description="restarts of a crashed trainer inside its training "
                                  "task, each from the split's newest checkpoint; a failure that repeats is not "
                                  "restarted")
    retries: int = Field(4, ge=0, le=20, description="retries of a task by Argo (set_retry): on KFP 2.17's own "
                         "configuration (OnError) a task whose pod was deleted or preempted, not one that failed "
                         "(docs/operators.md, section 5)")
    heal_passes: int = Field(1, ge=0, le=5, description="passes over the run's unfinished splits after the first "
                             "one failed (a pod preempted, evicted or OOM-killed is Failed, which KFP 2.17's Argo "
                             "does not retry), each split from its checkpoint; the last pass assembles and evaluates "
                             "what is whole, naming a split still lost; 0: none (docs/operators.md, section 5)")
    retry_backoff_seconds: int = Field(120, ge=0, le=3600, description="wait before the first retry, doubled for "
                                       f"each next one; 120 s then 240 s outlast the {LEASE_SECONDS} s lease of a "
                                       "trainer killed without a chance to release it")
    kueue_queue: str | None = Field(None, description="Kueue LocalQueue to admit the GPU tasks' pods through (label "
                                                      "kueue.x-k8s.io/queue-name); unset: no Kueue")
    prepare_cpu: str = Field("4", description="CPU request and limit of each task that reads the source (the plan "
                                              "and each split's data); decoding uses this many cores")
    prepare_memory: str = Field("8G", description="memory request of each task that reads the source: a split's "
                                                  "images at 128 px (13k ImageNet images: 0.7 GB) several times over")
    data_pvc: str | None = Field(None, description="NAME:/MOUNT: a PersistentVolumeClaim mounted into the tasks "
                                                   "that read the source, for a --source on a volume")
    source_endpoint: str | None = Field(None, description="http(s)://host:port of an S3 source on another "
                                                          "endpoint than the store's (ACGAN_SOURCE_S3_ENDPOINT)")
    source_secret: str | None = Field(None, description="Secret with the S3 source's own AWS_ACCESS_KEY_ID / "
                                                        "AWS_SECRET_ACCESS_KEY; unset: the store's keys")

    @property
    def training_threads(self) -> int:
        """OMP_NUM_THREADS of a training task: `train_threads`, else its whole cores of `train_cpu` (at least 1)."""
        if self.train_threads:
            return self.train_threads
        cpu = self.train_cpu
        return max(1, int(float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)))

    @field_validator("train_cpu", "prepare_cpu")
    @classmethod
    def _cpu_quantity(cls, v: str) -> str:
        if not re.fullmatch(r"\d+(\.\d+)?m?", v) or float(v.rstrip("m")) == 0:
            raise ValueError(f"{v!r} is not a CPU quantity like 8, 0.5 or 500m")
        return v

    @field_validator("image")
    @classmethod
    def _image_reference(cls, v: str) -> str:
        if not _IMAGE.match(v):
            raise ValueError(f"{v!r} is not an image reference like registry.example.com/acgan-ensemble:0.1.0")
        return v

    @field_validator("node_selector")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value):
                raise ValueError(f"node selector {key}={value} is not a valid Kubernetes label (key=value)")
        return v

    @field_validator("store_ca_config_map")
    @classmethod
    def _config_map_name(cls, v: str | None) -> str | None:
        if v is not None and not _PVC_NAME.match(v):
            raise ValueError(f"ConfigMap {v!r} is not a valid Kubernetes name (lowercase letters, digits, '-', '.')")
        return v

    @field_validator("kueue_queue")
    @classmethod
    def _queue_name(cls, v: str | None) -> str | None:
        if v is not None and not _LABEL_VALUE.match(v):
            raise ValueError(f"Kueue queue {v!r} is not a valid queue name (a Kubernetes label value)")
        return v

    @field_validator("source_endpoint")
    @classmethod
    def _endpoint_uri(cls, v: str | None) -> str | None:
        return checked_uri(v)

    @field_validator("data_pvc")
    @classmethod
    def _pvc_mount(cls, v: str | None) -> str | None:
        if v is None:
            return v
        name, _, mount = v.partition(":")
        if not _PVC_NAME.match(name) or not mount.startswith("/"):
            raise ValueError(f"--data-pvc {v!r}: give NAME:/MOUNT, a PersistentVolumeClaim's name and an absolute "
                             "path to mount it at, e.g. imagenet:/data")
        return v

    @field_validator("gpu_toleration")
    @classmethod
    def _taint_key(cls, v: str | None) -> str | None:
        if v is not None and not _LABEL_KEY.match(v):
            raise ValueError(f"GPU toleration {v!r} is not a valid taint key")
        return v

