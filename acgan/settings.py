"""Validated settings: what a run trains (`RunSettings`, the pipeline's parameters) and what the commands that read a
store take (`EvalSettings`, `SampleSettings`, `ServeSettings`). Each rejects unknown keys and impossible combinations.
Where a run's tasks run is acgan/cluster_settings.py's, how it is started pipelines/launch_settings.py's, the presets'
values acgan/presets.py's.

Each setting is declared once, as a field with its default and description: a run's in `DataSettings`,
`ModelSettings`, `TrainingSettings` and `EvaluationSettings` (the seed in `SeedSetting`, which they share; whether
training compiles in `CompileSetting`, which `acgan rerun` also takes), and `RunSettings`, the trainer's config
(`TrainConfig`, with `DeviceSetting`), the model's (`ModelConfig`), the data config (`PrepareConfig`) and `acgan
evaluate`'s settings (`EvalSettings`) inherit those fields. The command line's flags (acgan_cli/flags.py) and the
pipeline's parameters (pipelines/acgan_ensemble.py) are made from the fields, with `value_type` giving both a field's
type; tests/test_settings.py counts the declarations."""

from __future__ import annotations

import math
import os
import types
import typing
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from acgan.presets import PRESETS
from acgan.uri import uri_problem

KNOWN_CLASS_COUNTS = {"digits": 10, "cifar10": 10}
AUGMENTATIONS = ("translation", "cutout")
LOCAL_PARALLELISM = 2  # `acgan run`: training tasks at once on one machine, sharing its cores
# Steps of one split at most: years on one GPU, and exact in KFP's parameters (JSON numbers, doubles).
MAX_STEPS = 10**9
# A lease's life without renewal, a split's trainer's and a local run's: how long one killed without releasing it
# blocks its split or its store.
LEASE_SECONDS = 300


def value_type(annotation) -> type:
    """The type of a settings field's values, as the command line reads them and a KFP parameter holds them: a
    Literal's values' type, an optional's other type, list or dict for those, int, float, bool or Path, else str
    (pydantic validates the value against the field after)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return type(args[0])
    if origin in (typing.Union, types.UnionType):
        return value_type(args[0])
    if origin in (list, dict):
        return origin
    return annotation if annotation in (int, float, bool, Path) else str


def checked_uri(uri: str | None) -> str | None:
    """A URI a user gave, refused (with the credentials redacted) by the rule every command applies at its start."""
    problem = None if uri is None else uri_problem(uri)
    if problem is not None:
        raise ValueError(problem)
    return uri


def parse_policy(policy: str) -> str:
    """Normalises a policy string ("cutout, translation" -> "translation,cutout"; "none" -> "")."""
    names = {name.strip() for name in policy.split(",")} - {"", "none"}
    unknown = sorted(names - set(AUGMENTATIONS))
    if unknown:
        raise ValueError(f"unknown augmentation {', '.join(unknown)}: use a comma-separated subset of "
                         f"{', '.join(AUGMENTATIONS)}, or none")
    return ",".join(op for op in AUGMENTATIONS if op in names)


AugmentPolicy = Annotated[str, AfterValidator(parse_policy)]

def _empty_is_unset(value):
    """The KFP UI sends "" for a parameter left empty; KFP has no None (an optional number is a string parameter)."""
    return None if value == "" else value


def _comma_separated(value):
    """The command line gives a list as one comma-separated text; the KFP UI and experiment.json as a list."""
    return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value


AnalysisList = Annotated[list[str], BeforeValidator(_comma_separated)]


def _split_ids(value):
    """The command line gives split ids as one comma-separated text."""
    if not isinstance(value, str):
        return value
    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"{value!r}: give split ids separated by commas, e.g. 0,3,7") from None


class SeedSetting(BaseModel):
    """The seed, one for a run's training and evaluation: shared by the training and data settings (`PresetSettings`)
    and the evaluation's (`EvaluationSettings`)."""

    seed: int = Field(0, ge=0, description="seed of the data order, the weights and the evaluation samples")


class DeviceSetting(BaseModel):
    """Where a process computes: shared by the trainer's settings (`TrainConfig`), the evaluation's (`EvalSettings`)
    and `acgan sample`'s (`SampleSettings`)."""

    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto | cpu | cuda: the device this command "
                                                   "computes on (auto: a GPU when one is visible)")

    @property
    def torch_device(self) -> str:
        """`device` with auto resolved: cuda when a GPU is visible, else cpu (torch imported only when asked)."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


class RawSetting(BaseModel):
    """Which of a checkpoint's generators a command reads: shared by `EvalSettings` and `SampleSettings`."""

    raw: bool = Field(False, description="each split's trained G itself rather than its sampling snapshot (the "
                      "averaged G, where the run kept one: --ema-kimg)")


class CompileSetting(BaseModel):
    """Whether training runs G and D through `torch.compile`: a training setting (`TrainingSettings`), and a flag of
    `acgan rerun`, so that an operator whose image or nodes cannot compile turns it off for a run without a rebuild."""

    compile: Literal["auto", "on", "off"] = Field("auto", description="auto | on | off: torch.compile G and D for "
                                                  "training (auto: on a GPU); off if compiling fails on your nodes")


class PresetSettings(SeedSetting):
    """The base of every model that holds training or data settings: unknown keys are rejected, and `preset` fills
    the settings not given from a named preset; the resolved model records the preset's name and every value."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)  # an input may be a URI holding a secret
    default_preset: ClassVar[str | None] = None  # None: each field's own default (the paper's values)

    preset: str | None = Field(None, description=f"named defaults: {' or '.join(PRESETS)}; a setting given "
                                                 "explicitly overrides the preset's value (the KFP UI shows the "
                                                 "values of the preset compiled in: `acgan compile --preset NAME`)")

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data):
        if not isinstance(data, dict):
            return data
        name = data.get("preset", cls.default_preset) or None  # the KFP UI sends "" for an unset string
        values = PRESETS.get(name, {}) if isinstance(name, str) else {}  # an unknown name fails in `_known_preset`
        return {**{k: v for k, v in values.items() if k in cls.model_fields}, **data, "preset": name}

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str | None) -> str | None:
        if v is not None and v not in PRESETS:
            raise ValueError(f"{v!r} is not a preset: use one of {', '.join(PRESETS)}")
        return v


class DataSettings(PresetSettings):
    """What data a run reads and how it is split; shared by `RunSettings` and `PrepareConfig`."""

    dataset: Literal["digits", "cifar10", "folder", "synthetic"] = Field(
        "digits", description="digits (ships with scikit-learn), cifar10, folder (a sub-folder or a .tar per "
                              "class) or synthetic")
    source: str | None = Field(None, description="cifar10/folder input: a path as the preparation pods see it (a "
                                                 "volume mounted with `acgan compile --data-pvc`), or for folder "
                                                 "also s3://BUCKET/PREFIX")
    class_list: str | None = Field(None, description="folder: a text file of class names, one a line: only "
                                                     "these classes, in this order (a path, or s3://BUCKET/KEY)")
    resolution: Literal[32, 64, 128] = Field(32, description="image size in pixels: 32, 64 or 128 (the paper's)")
    classes_per_split: int = Field(10, ge=1, description="classes per AC-GAN of the ensemble; the paper: 10")
    num_classes: int = Field(10, ge=1, le=100_000, description="synthetic only: number of classes")
    images_per_class: int = Field(100, ge=2, le=100_000, description="synthetic only: images per class")

    @field_validator("source", "class_list", mode="before")
    @classmethod
    def _path_text(cls, v):
        return str(v) if isinstance(v, os.PathLike) else v or None  # the KFP UI sends "" for an unset string

    @field_validator("source", "class_list")
    @classmethod
    def _no_credentials(cls, v: str | None) -> str | None:
        return checked_uri(v)

    @model_validator(mode="after")
    def _source_fits_dataset(self) -> "DataSettings":
        if self.dataset in ("cifar10", "folder") and not self.source:
            raise ValueError(f"dataset {self.dataset} needs --source: the {self.dataset} files to read")
        if self.class_list and self.dataset != "folder":
            raise ValueError("--class-list selects class folders: it needs --dataset folder")
        classes = self.known_class_count
        if classes is not None and self.classes_per_split > classes:
            raise ValueError(f"classes_per_split {self.classes_per_split} is larger than the {classes} classes of "
                             f"{self.dataset}")
        return self

    @property
    def known_class_count(self) -> int | None:
        """The class count before reading any data (None for a folder data set)."""
        return self.num_classes if self.dataset == "synthetic" else KNOWN_CLASS_COUNTS.get(self.dataset)


class ModelSettings(BaseModel):
    """The settings that shape G and D (the objective too: TAC's twin class head is part of D), and D's
    regularisation: part of the training settings, and, with what the plan fixes (the resolution, the channels, the
    split's classes), the model's config (acgan/model.py's `ModelConfig`), so a new model setting is one field here.
    Each default is the paper's."""

    model_config = ConfigDict(extra="forbid")

    noise_dim: int = Field(100, ge=1, le=4096, description="G's noise inputs (z), beside the one-hot class; the "
                                                           "paper: 100")
    width: float = Field(1.0, gt=0, le=4.0, description="G's channel multiplier; the paper's network is 1.0")
    d_width: float = Field(1.0, gt=0, le=4.0, description="D's channel multiplier; the paper's network is 1.0")
    d_dropout: float = Field(0.5, ge=0, lt=1, description="dropout after each D layer; the paper: 0.5")
    d_noise_std: float = Field(0.1, ge=0, le=10, description="D's Gaussian activation noise while training; the "
                                                            "paper's (our reading): 0.1")
    g_layout: Literal["paper", "imagenet-start"] = Field(
        "paper", description="G at 32 px: paper (the appendix's CIFAR-10 generator: linear to 384 x 4 x 4, then "
                             "192, 96, 3 channels) or imagenet-start (the ImageNet G's 768 x 8 x 8 start, then 384 "
                             "and the image); the same network at 64 and 128 px")
    objective: Literal["acgan", "tac"] = Field(
        "acgan", description="acgan (the paper's) or tac: TAC-GAN's twin auxiliary classifier (Gong et al. 2019), a "
                             "second class head of D trained on generated images only, whose class term G subtracts "
                             "from its own so that samples keep their class's variety; the paper: acgan")


class TrainingSettings(ModelSettings, CompileSetting, PresetSettings):
    """How one split's AC-GAN is trained; shared by `RunSettings` and `TrainConfig`. Each default is the paper's."""

    steps: int = Field(50_000, ge=1, le=MAX_STEPS, description="training steps per split (one D and one G update "
                                                              "each); a larger value continues a finished split; "
                                                              "the paper: 50000")
    batch_size: int = Field(100, ge=1, le=65_536, description="images per training step; the paper: 100")
    lr: float = Field(2e-4, gt=0, le=1.0, description="Adam's learning rate, for G and D; the paper: 0.0002")
    checkpoint_every: int = Field(1000, ge=1, le=MAX_STEPS, description="steps between checkpoints: at most this "
                                                                       "much is lost when a training pod is preempted")
    d_fake_class_loss: bool = Field(True, description="true | false: D's class term on generated images; the "
                                                      "paper: true")
    mode_seeking: float = Field(0.0, ge=0, le=100, description="weight of G's mode-seeking term against "
                                                              "within-class collapse (MSGAN); the paper: 0")
    augment: AugmentPolicy = Field("", description="DiffAugment policy for D's inputs: a comma-separated subset of "
                                                   "translation, cutout; empty or none is the paper's")
    ema_kimg: float = Field(0.0, ge=0, le=1e6, description="half-life, in thousands of images, of the exponential "
                            "moving average of G's weights that checkpoints keep as the sampling generator (EDM's "
                            "ema_kimg); 0: none, G itself samples; the paper: 0")
    ema_rampup: float = Field(0.05, ge=0, le=1, description="ramp-up of the averaged G (EDM's): its half-life is at "
                              "most this fraction of the images trained so far, so that a short run's early weights "
                              "fade; 0: no ramp-up")


class EvaluationSettings(SeedSetting):
    """What the evaluation of an ensemble computes, and from how many samples; shared by `RunSettings` (the
    pipeline's last step) and `EvalSettings` (`acgan evaluate`, which adds the settings only it takes)."""

    model_config = ConfigDict(extra="forbid")

    samples_per_class: int = Field(100, ge=2, le=100_000, description="evaluation: samples drawn per class")
    pairs: int = Field(1000, ge=1, le=1_000_000, description="evaluation: random MS-SSIM pairs per class; the "
                                                             "paper: 100")
    classifier_steps: int = Field(1500, ge=1, le=1_000_000, description="evaluation: training steps of the "
                                                                        "classifier, when none is saved in the store")
    cas_steps: Annotated[int | None, BeforeValidator(_empty_is_unset)] = Field(
        None, ge=1, le=1_000_000, description="evaluation, cas analysis: training steps of the classifier trained on "
                                              "the samples at each evaluation (the evaluation classifier's network "
                                              "and recipe); unset: a third of classifier_steps")
    classifier: str = Field("trained", min_length=1, description=(
        "evaluation: 'trained' (a CNN trained on the store's real images, saved there and reused) or a .safetensors "
        "file, a path the evaluation's process or pod can read or a store key: another store's "
        "eval/classifier.safetensors, or torchvision's Inception-v3 weights"))
    analyses: AnalysisList = Field(default_factory=list, description=(
        "evaluation: the analyses to compute (on the command line: comma-separated, e.g. discriminability,diversity); "
        "empty: every one. The evaluation's table names them (acgan/evaluation/analyses.py) and a run refuses an "
        "unknown name before it trains. Only what they read is computed: the classifier (its features too) for all "
        "but diversity and cas; MS-SSIM, the slow part, for diversity and joint; cas trains a classifier of its own "
        "on the samples"))
    real_per_class: int = Field(200, ge=2, le=100_000, description="evaluation: real images per class used, at most")
    ms_ssim_threshold: Annotated[float | None, BeforeValidator(_empty_is_unset)] = Field(
        None, gt=0, le=1, description="evaluation, joint analysis: a class whose samples' MS-SSIM is at or above it "
                                      "is low in diversity; unset: the least diverse real class's, the paper's")
    accuracy_threshold: float = Field(0.01, ge=0, lt=1, description="evaluation, joint analysis: a class whose "
                                                                    "accuracy is at or below it is low in accuracy; "
                                                                    "the paper: 1%")

    @property
    def cas_training_steps(self) -> int:
        """CAS's classifier's steps: `cas_steps`, else a third of the evaluation classifier's, so that an evaluation
        that trains both spends a quarter of that time on CAS."""
        return self.cas_steps or max(1, self.classifier_steps // 3)


class RunSettings(TrainingSettings, DataSettings, EvaluationSettings):
    """The parameters of one experiment, as a user sets them in the KFP UI or on the command line."""

    default_preset: ClassVar[str | None] = "demo"  # `RunSettings(store=...)` is what `acgan run` trains

    store: str = Field(min_length=1, description="where the experiment lives: a directory, or s3://BUCKET/PREFIX "
                                                  "on a cluster; rerunning with the same store trains only what "
                                                  "is not complete")
    split_ids: Annotated[list[int], BeforeValidator(_split_ids)] = Field(
        default_factory=list, description="splits to train (on the command line: comma-separated, e.g. 0,3,7); "
                                          "empty = all")
    include_complete: bool = Field(False, description="also run a training task for each split already at its "
                                   "target steps (it returns at once; its metrics and samples then show in this "
                                   "run); by default only the unfinished splits are fanned out")

    @field_validator("store")
    @classmethod
    def _store_uri(cls, v: str) -> str:
        return checked_uri(v)

    @model_validator(mode="after")
    def _splits_in_plan(self) -> "RunSettings":
        classes = self.known_class_count
        if any(s < 0 for s in self.split_ids) or len(set(self.split_ids)) != len(self.split_ids):
            raise ValueError(f"split_ids {self.split_ids} must be distinct non-negative split ids")
        if classes is not None and self.split_ids and max(self.split_ids) >= math.ceil(classes / self.classes_per_split):
            raise ValueError(f"split_ids {self.split_ids} are outside the plan: {self.dataset} with "
                             f"{self.classes_per_split} classes per split has splits 0.."
                             f"{math.ceil(classes / self.classes_per_split) - 1}")
        return self

    @property
    def splits_to_train(self) -> int | None:
        """The training tasks of this run, where known before any data is read (None for a folder data set)."""
        classes = self.known_class_count
        return len(self.split_ids) or (math.ceil(classes / self.classes_per_split) if classes else None)


class EvalSettings(EvaluationSettings, DeviceSetting, RawSetting):
    """`acgan evaluate`'s settings: the evaluation's shared ones (`EvaluationSettings`: samples, pairs, classifier,
    analyses, seed), the device, and those only it takes."""

    is_splits: int = Field(10, ge=1, le=100, description="Inception Score: the samples in this many parts")
    grid_columns: int = Field(10, ge=1, le=100, description="samples per class in the report's grids")
    report_splits: int = Field(10, ge=1, le=1000, description="splits whose sample grids the report shows")
    overfitting_classes: int = Field(4, ge=1, le=100, description="classes in the overfitting grids")
    neighbours: int = Field(5, ge=1, le=50, description="nearest training neighbours shown per sample")
    classifier_cache: str = Field("~/.cache/acgan/classifiers", description="a folder on this machine where the "
                                  "trained classifier is kept by the real data's checksum and its settings, and "
                                  "reused by the evaluation of another store of the same data; '' for none")


class SampleSettings(DeviceSetting, RawSetting):
    """`acgan sample`'s settings beside what it draws (the class, how many, the file)."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, ge=0, description="seed of the samples' noise: the same seed gives the same images")


class ServeSettings(BaseModel):
    """`acgan serve`: one Open Inference Protocol server for the whole ensemble of a store (acgan/serving/)."""

    model_config = ConfigDict(extra="forbid")

    store: str = Field(description="the store whose ensemble.json is served: a directory or s3://BUCKET/PREFIX")
    host: str = Field("127.0.0.1", min_length=1, description="address to listen on: 127.0.0.1 is this machine "
                                                             "only; 0.0.0.0 in a pod")
    port: int = Field(8080, ge=0, le=65535, description="port to listen on; 0: any free port, printed when serving "
                                                        "starts")
    model_name: str = Field("acgan-ensemble", pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
                            description="the model's name in the protocol's paths, /v2/models/NAME")
    device: Literal["cpu", "cuda"] = Field("cpu", description="where the generators run")
    max_loaded: int = Field(100, ge=1, le=100_000, description="generators kept loaded, the least recently used "
                            "dropped first (the paper's 128 px G is 66 MB: 100 take 6.6 GB)")
    max_images: int = Field(256, ge=1, le=100_000, description="most images one request may ask for")
    batch_wait_ms: float = Field(5.0, ge=0, le=1000, description="how long the first request for a split waits for "
                                 "others to share its forward passes; 0: no batching, one request at a time")
    forward_batch: int | None = Field(None, ge=1, le=4096, description="images in every forward pass, the last one "
                                      "of a batch padded (so an image never depends on what it was batched with); "
                                      "unset: 64 on a GPU, on a CPU 2**14 output pixels (16 at 32 px, 1 at 128 px)")
    max_queued_images: int = Field(4096, ge=1, le=10_000_000, description="images waiting to be drawn (or being "
                                   "drawn) beyond which a request is answered 503 with Retry-After (a request alone "
                                   "is always taken)")
    request_timeout_s: float = Field(30.0, gt=0, le=3600, description="seconds a client has to send a request's "
                                     "headers (from connecting, or from their first byte after the previous answer), "
                                     "and again its body")
    idle_timeout_s: int = Field(65, ge=1, le=3600, description="seconds a keep-alive connection may stay idle between "
                                "requests (longer than a load balancer's idle timeout, e.g. 60 s on AWS ALB)")

