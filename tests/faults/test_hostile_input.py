"""Fault 5, hostile input: random and malicious settings, CLI options, plan files, manifests and folder names are
rejected with one clear line before anything is written; nothing from the store is unpickled."""

import ast
import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from components.capacity import PlanInput
from components.cli import main
from components.data.prepare import PrepareConfig, prepare
from components.ensemble import ENSEMBLE_KEY, load_ensemble
from components.errors import UserError, explain
from components.evaluation import EvalSettings
from components.settings import ClusterSettings, RunSettings
from components.store import LocalStore
from components.training.loop import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
MODELS = [RunSettings, ClusterSettings, TrainConfig, PrepareConfig, EvalSettings, PlanInput]
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                   st.text(max_size=40), st.lists(st.integers(-5, 5), max_size=5),
                   st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3))
RUNS: dict[str, int] = {"settings": 0, "cli": 0}


def one_line(text: str) -> bool:
    return bool(text.strip()) and "\n" not in text.strip() and "Traceback" not in text


@settings(max_examples=300, deadline=None)
@given(model=st.sampled_from(MODELS), data=st.data())
def test_settings_models_accept_or_explain_in_one_line(model: type[BaseModel], data):
    fields = list(model.model_fields) + ["unknown_option"]
    given_values = data.draw(st.dictionaries(st.sampled_from(fields), VALUES, max_size=6))
    RUNS["settings"] += 1
    try:
        model.model_validate(given_values)
    except ValidationError as e:
        assert one_line(explain(e))


CLI_VALUE = st.one_of(st.text(max_size=20), st.integers(-3, 10**6).map(str), st.floats(allow_nan=True).map(str))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from(["plan", "compile"]), options=st.lists(st.tuples(st.sampled_from([
    "--gpus", "--classes", "--classes-per-split", "--steps", "--images-per-second", "--target-hours", "--image",
    "--node-selector", "--parallelism", "--gpu-toleration", "--kueue-queue", "--timeout-seconds", "--bogus"]),
    CLI_VALUE), max_size=4))
def test_cli_options_never_traceback(command, options, capsys, tmp_path):
    argv = [command] + [part for opt, value in options for part in (f"{opt}={value}",)]
    argv += ["--images-per-second", "100"] if command == "plan" else ["-o", str(tmp_path / "p.yaml")]
    RUNS["cli"] += 1
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own rejection
        code = e.code
    err = capsys.readouterr().err
    assert code in (0, 2)
    if code == 2:
        assert one_line(err), err


@pytest.mark.parametrize("splits, message", [
    ([["../../etc/passwd", 1]], "is not a class of this data set"),
    ([["/abs/key"], [1]], "is not a class of this data set"),
    ([[0, 0, 1]], "appears in more than one place"),
    ([[0, 1], [1, 2]], "appears in more than one place"),
    ([list(range(100_000))], "plan file"),
    ([[0.5]], "plan file"),
    ("not a list", "must be a JSON object"),
])
def test_hostile_plan_files_are_rejected_before_anything_is_written(tmp_path, splits, message):
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps({"splits": splits}))
    store = LocalStore(tmp_path / "store")
    with pytest.raises(UserError, match=message) as e:
        prepare(PrepareConfig(dataset="digits", resolution=32, plan_file=plan_file), store)
    assert one_line(explain(e.value))
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("*"))


def test_non_utf8_and_traversal_names(tmp_path, capsys):
    source = tmp_path / "images"
    (source / os.fsdecode(b"bad-\xff-name")).mkdir(parents=True)
    store = tmp_path / "store"
    assert main(["prepare", "--store", str(store), "--dataset", "folder", "--source", str(source)]) == 2
    err = capsys.readouterr().err
    assert one_line(err) and "not UTF-8" in err
    assert not store.exists() or not any(store.rglob("*"))
    for key in ("../outside", "/etc/passwd", "a/../../b", "a\x00b"):
        with pytest.raises(UserError):
            LocalStore(tmp_path / "s").write_bytes(key, b"x")
    assert not (tmp_path / "outside").exists()


@pytest.mark.parametrize("tamper", [
    lambda m: m["classes"][0].update(checkpoint="../../../etc"),
    lambda m: m["classes"][0].update(checkpoint="/splits/split-00000/checkpoints/step-00000004"),
    lambda m: m["classes"][0].update(checkpoint="splits/split-00001/checkpoints/step-00000004"),
    lambda m: m["classes"].append(dict(m["classes"][0])),
    lambda m: m.update(classes=m["classes"] * 5000),
])
def test_tampered_ensemble_manifest_is_refused(tmp_path, tamper):
    store = LocalStore(tmp_path / "store")
    member = {"class_id": 0, "name": "0", "split": 0, "local_index": 0,
              "checkpoint": "splits/split-00000/checkpoints/step-00000004", "step": 4}
    manifest = {"resolution": 32, "channels": 1, "target_steps": 4,
                "classes": [member, {**member, "class_id": 1, "name": "1", "local_index": 1}]}
    store.write_bytes(ENSEMBLE_KEY, json.dumps(manifest).encode())
    assert load_ensemble(store).classes[1].class_id == 1  # the untampered manifest loads
    tamper(manifest)
    store.write_bytes(ENSEMBLE_KEY, json.dumps(manifest).encode())
    with pytest.raises(UserError, match="is not a valid ensemble manifest") as e:
        load_ensemble(store)
    assert one_line(explain(e.value))


def test_nothing_from_the_store_is_unpickled():
    """Static: no pickle, torch.load or allow_pickle anywhere but the CIFAR-10 reader, whose restricted unpickler
    reads the user's own data set (never the store) and admits only numpy arrays and builtins."""
    offenders = []
    for path in sorted((ROOT / "components").rglob("*.py")) + sorted((ROOT / "pipelines").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            text = ast.unparse(node) if isinstance(node, (ast.Call, ast.Attribute, ast.Import, ast.ImportFrom)) else ""
            risky = ("torch.load" in text or "allow_pickle=True" in text or "weights_only=False" in text
                     or (isinstance(node, (ast.Import, ast.ImportFrom)) and "pickle" in text))
            if risky:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == [f"components/data/sources.py:{_cifar_pickle_import_line()}"]


def _cifar_pickle_import_line() -> int:
    tree = ast.parse((ROOT / "components" / "data" / "sources.py").read_text())
    return next(n.lineno for n in ast.walk(tree) if isinstance(n, ast.Import) and n.names[0].name == "pickle")


def test_hostile_input_figures(fault_report):
    assert RUNS["settings"] >= 300 and RUNS["cli"] >= 60
    fault_report("hostile input", "hypothesis: random settings and CLI options; plan files with traversal, "
                 "duplicates, 100k classes; tampered manifests; non-UTF-8 folder names",
                 RUNS["settings"] + RUNS["cli"] + 7 + 5 + 1, RUNS["settings"] + RUNS["cli"] + 7 + 5 + 1,
                 "none", "none; rejected before anything is written")
