"""The store's layout: every key and prefix the project reads or writes, defined here and nowhere else.

`*_KEY` is one object, `*_PREFIX` a folder (ending in `/`, or a key's common start), a function the key of one split
(or one of its checkpoints); `*_FILE` and `MARKER` name the files inside a checkpoint's folder. docs/design.md's "What
the store holds" lists exactly these (tests/test_layout_module.py checks it), so a new store file is one line here
and one there.
"""

from __future__ import annotations

# The run: its settings, its plan, how it was submitted, the local run's lease.
EXPERIMENT_KEY = "experiment.json"  # the run's settings (acgan/experiment.py)
PLAN_KEY = "plan.json"  # classes and splits (acgan/data/plan.py)
SUBMISSION_KEY = "cluster.json"  # how the experiment was compiled and submitted, for `acgan rerun` (pipelines/runs.py)
RUN_LEASE_KEY = "run-lease.json"  # a local run's (acgan/lease.py `RunLease`)
ENSEMBLE_KEY = "ensemble.json"  # the assembly (acgan/ensemble.py): the checkpoints it names are kept

# The data: preparation settings, one shard per split and its record, the real images' diversity.
PREPARE_KEY = "data/prepare.json"
REAL_DIVERSITY_PREFIX = "data/real-ms-ssim/"  # per split (acgan/collapse.py)

# The evaluation.
METRICS_KEY = "eval/metrics.json"
REPORT_KEY = "eval/report.html"
FIGURES_PREFIX = "eval/figures/"  # the report's charts
OVERFITTING_PREFIX = "eval/overfitting/"  # nearest neighbours, interpolations, fixed-z grids
SAMPLE_GRID_PREFIX = "eval/samples-split-"  # one grid per split
CLASSIFIER_WEIGHTS_KEY = "eval/classifier.safetensors"  # trained on the real images, reused by every evaluation
CLASSIFIER_INFO_KEY = "eval/classifier.json"

# Each split's training.
SPLITS_PREFIX = "splits/"
_LEASE = "lease.json"  # in a split's folder: the trainer holding it

# A checkpoint's files: the sampling snapshot (generator + meta) and the full training state, then the marker.
GENERATOR_FILE = "generator.safetensors"
META_FILE = "meta.json"
TRAIN_STATE_FILE = "train_state.safetensors"
MARKER = "COMPLETE.json"


def shard_key(split: int) -> str:
    return f"data/split-{split:05d}.safetensors"


def shard_info_key(split: int) -> str:
    return f"data/split-{split:05d}.json"


def real_diversity_key(split: int) -> str:
    return f"{REAL_DIVERSITY_PREFIX}split-{split:05d}.json"


def sample_grid_key(split: int) -> str:
    return f"{SAMPLE_GRID_PREFIX}{split:05d}.png"


def split_prefix(split: int) -> str:
    return f"{SPLITS_PREFIX}split-{split:05d}"


def split_of_lease(key: str) -> int | None:
    """The split whose lease `key` is (`lease_key`'s inverse), None for any other key."""
    number = key.removeprefix(f"{SPLITS_PREFIX}split-").partition("/")[0]
    return int(number) if number.isdigit() and lease_key(int(number)) == key else None


def config_key(split: int) -> str:
    return f"{split_prefix(split)}/config.json"  # the resolved training config of the split's last run


def stats_key(split: int) -> str:
    return f"{split_prefix(split)}/stats.jsonl"


def lease_key(split: int) -> str:
    return f"{split_prefix(split)}/{_LEASE}"


def checkpoints_prefix(split: int) -> str:
    return f"{split_prefix(split)}/checkpoints/"


def checkpoint_prefix(split: int, step: int) -> str:
    return f"{checkpoints_prefix(split)}step-{step:08d}"


def quarantine_prefix(split: int, step: int, moved_at_ms: int) -> str:
    return f"{split_prefix(split)}/quarantine/step-{step:08d}-{moved_at_ms}"
