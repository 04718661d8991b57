"""The split plan: which classes each sub-model of the ensemble owns. Written to the store as `plan.json`.

The paper splits ImageNet's 1000 classes into 100 contiguous groups of 10 (neighbouring ids are semantically close).
A user may supply their own grouping as a JSON file: {"splits": [[0, 1, 2], [3, 4], ...]} with class ids or names.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from acgan.errors import UserError, command
from acgan.layout import PLAN_KEY
from acgan.store import Store, read_model, write_json

MAX_CLASSES = 100_000


class ClassInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: int = Field(ge=0)
    name: str = Field(min_length=1, max_length=256)
    images: int | None = Field(None, ge=0, description="not known from a listing: each shard's sidecar counts them")


class SplitPlan(BaseModel):
    """Every class of the data set in exactly one split; no split empty. Class ids are 0..n-1 in data set order."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    resolution: int
    channels: int
    classes: list[ClassInfo] = Field(min_length=1, max_length=MAX_CLASSES)
    splits: list[list[int]] = Field(min_length=1)

    @model_validator(mode="after")
    def _every_class_once(self) -> "SplitPlan":
        if [c.id for c in self.classes] != list(range(len(self.classes))):
            raise ValueError("class ids must be 0..n-1 in order")
        check_splits(self.splits, len(self.classes))
        return self

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split_of(self, class_id: int) -> tuple[int, int]:
        """(split id, index of the class inside that split's model)."""
        if not 0 <= class_id < self.num_classes:
            raise UserError(f"class {class_id} is out of range: this store has classes 0..{self.num_classes - 1}")
        for split, members in enumerate(self.splits):
            if class_id in members:
                return split, members.index(class_id)
        raise AssertionError("validated plan lost a class")

    def check_split(self, split: int) -> list[int]:
        if not 0 <= split < len(self.splits):
            raise UserError(f"split {split} is out of range: this store has splits 0..{len(self.splits) - 1}")
        return self.splits[split]

    def class_id(self, text: str) -> int:
        """A class given on the command line, by id or by name."""
        if text.lstrip("-").isdigit():
            return int(text)
        for c in self.classes:
            if c.name == text:
                return c.id
        raise UserError(f"no class named {text!r} in this store; give a class id 0..{self.num_classes - 1}")


def check_splits(splits: list[list[int]], num_classes: int) -> None:
    seen: set[int] = set()
    for i, members in enumerate(splits):
        if not members:
            raise ValueError(f"split {i} is empty: every split needs at least one class")
        for c in members:
            if not 0 <= c < num_classes:
                raise ValueError(f"split {i} names class {c}, outside 0..{num_classes - 1}")
            if c in seen:
                raise ValueError(f"class {c} appears in more than one place in the plan")
            seen.add(c)
    missing = sorted(set(range(num_classes)) - seen)
    if missing:
        raise ValueError(f"classes {missing[:10]}{'...' if len(missing) > 10 else ''} are in no split")


def contiguous_splits(num_classes: int, classes_per_split: int) -> list[list[int]]:
    """The paper's grouping: consecutive ids, `classes_per_split` to a split (the last one may be smaller)."""
    if classes_per_split > num_classes:
        raise UserError(f"--classes-per-split {classes_per_split} is larger than the {num_classes} classes of the "
                        f"data set: use at most {num_classes}")
    return [list(range(s, min(s + classes_per_split, num_classes))) for s in range(0, num_classes, classes_per_split)]


def splits_from_file(path: Path, class_names: list[str]) -> list[list[int]]:
    """Read a user's plan file; entries may be class ids or class names."""
    try:
        doc = json.loads(Path(path).read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise UserError(f"--plan-file {path} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"--plan-file {path} is a folder: give a JSON file") from None
    except OSError as e:
        raise UserError(f"--plan-file {path}: cannot read it ({e.strerror})") from None
    except (ValueError, RecursionError) as e:  # not UTF-8, not JSON, an integer past 4300 digits, nested too deep
        raise UserError(f"plan file {path} is not UTF-8 JSON ({str(e)[:120]})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("splits"), list):
        raise UserError(f'plan file {path} must be a JSON object {{"splits": [[class, ...], ...]}}')
    index = {name: i for i, name in enumerate(class_names)}
    splits = []
    for members in doc["splits"]:
        if not isinstance(members, list):
            raise UserError(f"plan file {path}: every split must be a list of class ids or names")
        ids = []
        for m in members:
            if isinstance(m, bool) or not isinstance(m, (int, str)) or (isinstance(m, str) and m not in index):
                raise UserError(f"plan file {path}: {m!r} is not a class of this data set")
            ids.append(index[m] if isinstance(m, str) else m)
        splits.append(ids)
    try:
        check_splits(splits, len(class_names))
    except ValueError as e:
        raise UserError(f"plan file {path}: {e}") from None
    return splits


def load_plan(store: Store) -> SplitPlan:
    if not store.exists(PLAN_KEY):
        raise UserError(f"store {store.uri} has no plan: run {command('acgan', 'prepare', '--store', store.uri)} first")
    return read_model(store, PLAN_KEY, SplitPlan, "the plan is damaged: prepare a new store", checksum=True)


def save_plan(store: Store, plan: SplitPlan) -> None:
    write_json(store, PLAN_KEY, plan.model_dump(), checksum=True)
