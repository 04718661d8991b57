"""The split plan: contiguous splits, a plan file by class id or name, and every invalid plan refused before anything
is written."""

import json

import pytest

from acgan.data.plan import SplitPlan, contiguous_splits
from acgan.data.prepare import PrepareConfig, prepare
from acgan.errors import UserError
from acgan.store import LocalStore


def test_plan_file_by_id_and_name(tmp_path):
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps({"splits": [[9, "0", 3], [1, 2], [4, 5, 6, 7, 8]]}))
    plan = prepare(PrepareConfig(dataset="digits", plan_file=plan_file), LocalStore(tmp_path / "s"))
    assert plan.splits == [[9, 0, 3], [1, 2], [4, 5, 6, 7, 8]]
    assert plan.split_of(3) == (0, 2)


@pytest.mark.parametrize("splits, message", [
    ([[0, 1, 2, 3, 4], [], [5, 6, 7, 8, 9]], "split 1 is empty"),
    ([[0, 1, 2, 3, 4], [4, 5, 6, 7, 8, 9]], "class 4 appears in more than one place"),
    ([[0, 1, 2, 3], [5, 6, 7, 8, 9]], r"classes \[4\] are in no split"),
    ([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]], "outside 0..9"),
    ([["zero"]], "'zero' is not a class"),
])
def test_bad_plan_file_rejected_and_nothing_written(tmp_path, splits, message):
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps({"splits": splits}))
    store = LocalStore(tmp_path / "s")
    with pytest.raises(UserError, match=message):
        prepare(PrepareConfig(dataset="digits", plan_file=plan_file), store)
    assert store.list("") == []


def test_plan_validation():
    assert contiguous_splits(1000, 10)[99] == list(range(990, 1000))
    with pytest.raises(UserError, match="larger than the 10 classes"):
        contiguous_splits(10, 11)
    classes = [{"id": i, "name": str(i), "images": 1} for i in range(3)]
    with pytest.raises(ValueError, match="more than one place"):
        SplitPlan(dataset="x", resolution=32, channels=1, classes=classes, splits=[[0, 1], [1, 2]])
