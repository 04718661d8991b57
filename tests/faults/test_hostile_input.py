"""Fault 5, hostile input: random and malicious settings, CLI options, plan files, manifests and folder names are
rejected with one clear line before anything is written; nothing from the store is unpickled."""

import ast
import contextlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from acgan.capacity import PlanInput
from acgan_cli.main import main
from acgan.data.prepare import PrepareConfig, prepare
from acgan.checkpoint import latest_checkpoint
from acgan.ensemble import assemble_ensemble, load_ensemble
from acgan.errors import UserError, explain
from acgan.settings import EvalSettings
from acgan.cluster_settings import ClusterSettings
from acgan.layout import (ENSEMBLE_KEY, EXPERIMENT_KEY, MARKER, PLAN_KEY, checkpoint_prefix, config_key, lease_key,
                          stats_key)
from acgan.lease import Lease
from acgan.settings import RunSettings
from acgan.store import LocalStore, write_json
from acgan.stats import read_stats
from acgan.training.loop import TrainConfig, train_split
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[2]
MODELS = [RunSettings, ClusterSettings, TrainConfig, PrepareConfig, EvalSettings, PlanInput]
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                   st.text(max_size=40), st.lists(st.integers(-5, 5), max_size=5),
                   st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3))
# Inputs tried, and inputs whose test assertions all held (counted after them): the figures of this module's row.
TRIED: dict[str, int] = {}
SURVIVED: dict[str, int] = {}


@pytest.fixture(scope="module", autouse=True)
def _hostile_input_figures(fault_record):
    """One row for the module, written after all its tests ran (alone or in the suite): a failed test's inputs
    count as tried and not survived."""
    yield
    if TRIED:
        tried, survived = sum(TRIED.values()), sum(SURVIVED.values())
        fault_record("hostile input", "hypothesis: random settings, CLI options and contents of every JSON file of the "
               "store; plan files with traversal, duplicates, 100k classes; tampered manifests; bad paths, numbers "
               "and credentials in URIs; non-UTF-8 folder names", tried, survived, "none",
               "none; rejected before anything is written" if tried == survived else f"{tried - survived} not handled")


@contextlib.contextmanager
def tally(kind: str):
    """Count one input as tried now, and as survived only once the checks inside the block all held."""
    TRIED[kind] = TRIED.get(kind, 0) + 1
    yield
    SURVIVED[kind] = SURVIVED.get(kind, 0) + 1


def one_line(text: str) -> bool:
    return bool(text.strip()) and "\n" not in text.strip() and "Traceback" not in text


@settings(max_examples=300, deadline=None)
@given(model=st.sampled_from(MODELS), data=st.data())
def test_settings_models_accept_or_explain_in_one_line(model: type[BaseModel], data):
    fields = list(model.model_fields) + ["unknown_option"]
    given_values = data.draw(st.dictionaries(st.sampled_from(fields), VALUES, max_size=6))
    with tally("settings_models_accept_or_explain_in_one_line"):  # after the draws: a discarded draw is no input
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
@example(command="compile", options=[("--classes", "\n")])  # an unknown option whose value breaks the line (found)
def test_cli_options_never_traceback(command, options, capsys, tmp_path):
    with tally("cli_options_never_traceback"):
        argv = [command] + [part for opt, value in options for part in (f"{opt}={value}",)]
        argv += ["--images-per-second", "100"] if command == "plan" else ["-o", str(tmp_path / "p.yaml")]
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
    with tally("hostile_plan_files_are_rejected_before_anything_is_written"):
        plan_file = tmp_path / "plan.json"
        plan_file.write_text(json.dumps({"splits": splits}))
        store = LocalStore(tmp_path / "store")
        with pytest.raises(UserError, match=message) as e:
            prepare(PrepareConfig(dataset="digits", resolution=32, plan_file=plan_file), store)
        assert one_line(explain(e.value))
        assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("*"))


def test_non_utf8_and_traversal_names(tmp_path, capsys):
    with tally("non_utf8_and_traversal_names"):
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
    with tally("tampered_ensemble_manifest_is_refused"):
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
    packages = ("acgan", "components", "pipelines", "acgan_cli")
    for path in sorted(p for package in packages for p in (ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            text = ast.unparse(node) if isinstance(node, (ast.Call, ast.Attribute, ast.Import, ast.ImportFrom)) else ""
            risky = ("torch.load" in text or "allow_pickle=True" in text or "weights_only=False" in text
                     or (isinstance(node, (ast.Import, ast.ImportFrom)) and "pickle" in text))
            if risky:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == [f"acgan/data/sources.py:{_cifar_pickle_import_line()}"]


def _cifar_pickle_import_line() -> int:
    tree = ast.parse((ROOT / "acgan" / "data" / "sources.py").read_text())
    return next(n.lineno for n in ast.walk(tree) if isinstance(n, ast.Import) and n.names[0].name == "pickle")



def _edit_json(path: Path, edit) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(edit(json.loads(path.read_text()) if path.exists() else None))


def _with_labels_out_of_range(root: Path) -> None:
    """A class of split 1 in split 0's shard, with a sidecar that matches it (so its checksum passes): a shard built
    for another plan."""
    import hashlib

    from safetensors.torch import load_file, save_file

    shard = root / "data" / "split-00000.safetensors"
    tensors = load_file(shard)
    tensors["labels"][3] = 9
    save_file(tensors, shard)
    data = shard.read_bytes()
    _edit_json(root / "data" / "split-00000.json", lambda d: json.dumps(
        {**d, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}))


def _without_checksum(path: Path) -> dict:
    return {k: v for k, v in json.loads(path.read_text()).items() if k != "checksum"}


HUGE = "1" * 5000  # past Python's 4300-digit limit for int()
BAD_STORE_FILES = {
    "plan.json huge int": (lambda r: _edit_json(r / "plan.json", lambda d: json.dumps(d).replace(
        '"splits": [[0', f'"splits": [[{HUGE}', 1)), "status", "plan.json is not valid JSON"),
    # Checksummed as acgan writes it, so that validation is what refuses it.
    "plan.json wrong type": (lambda r: write_json(LocalStore(r), "plan.json", {**_without_checksum(r / "plan.json"),
                             "splits": [["x", 1, 2, 3, 4], [5, 6, 7, 8, 9]]}, checksum=True), "status",
                             "plan.json: splits.0.0: "),
    "plan.json without checksum": (lambda r: _edit_json(r / "plan.json", lambda d: json.dumps(
        {k: v for k, v in d.items() if k != "checksum"})), "status", "plan.json: checksum: missing"),
    "plan.json value changed": (lambda r: _edit_json(r / "plan.json", lambda d: json.dumps(
        {**d, "resolution": 33}, indent=2, sort_keys=True)), "status", "plan.json: checksum: "),
    "lease expires Infinity": (lambda r: _edit_json(r / "splits/split-00000/lease.json", lambda _: (
        '{"owner": "h/1/x", "expires": Infinity, "acquired": 0}')), "status", "lease.json: expires: "),
    "lease expires Infinity (train)": (lambda r: _edit_json(r / "splits/split-00000/lease.json", lambda _: (
        '{"owner": "h/1/x", "expires": Infinity, "acquired": 0}')), "train-split", "lease.json: expires: "),
    "config.json without train": (lambda r: _edit_json(r / "splits/split-00000/config.json", lambda _: json.dumps(
        {"model": {}})), "status", "config.json: train.steps: "),
    "shard labels out of range": (_with_labels_out_of_range, "train-split",
                                  "data/split-00000.safetensors: labels: 1 label(s) outside split 0's classes"),
}


def _contents(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", list(BAD_STORE_FILES))
def test_bad_store_files_are_named_in_one_line(digits_store, capsys, case):
    """A damaged store file: one line naming the file and the key (not a CLI flag), exit 2, nothing written."""
    with tally("bad_store_files_are_named_in_one_line"):
        damage, command, message = BAD_STORE_FILES[case]
        root = digits_store.root
        damage(root)
        before = _contents(root)
        argv = {"status": ["status", "--store", str(root)],
                "train-split": ["train-split", "--store", str(root), "--split", "0", "--steps", "1",
                                "--batch-size", "4", "--width", "0.0625"]}[command]
        assert main(argv) == 2
        err = capsys.readouterr().err
        (line,) = [ln for ln in err.splitlines() if "error:" in ln]
        assert message in line and f"{root}/" in line and "--splits" not in line and "Traceback" not in err, err
        assert _contents(root) == before


def test_bad_paths_and_numbers_on_the_command_line(tmp_path, capsys):
    with tally("bad_paths_and_numbers_on_the_command_line"):
        (tmp_path / "a-file").write_text("x")
        (tmp_path / "a-folder").mkdir()
        (tmp_path / "huge.json").write_text(f'{{"splits": [[{HUGE}]]}}')
        cases = [(["--store", str(tmp_path / "a-file")], "is a file, not a directory"),
                 (["--store", str(tmp_path / "s1"), "--plan-file", str(tmp_path / "a-folder")], "is a folder"),
                 (["--store", str(tmp_path / "s2"), "--plan-file", str(tmp_path / "huge.json")], "is not UTF-8 JSON")]
        for options, message in cases:
            assert main(["prepare", "--dataset", "digits", "--resolution", "32", *options]) == 2
            err = capsys.readouterr().err
            (line,) = [ln for ln in err.splitlines() if "error:" in ln]
            assert message in line and "Traceback" not in err, err
        assert (tmp_path / "a-file").read_text() == "x"
        assert not any(p.is_file() for p in tmp_path.rglob("*") if p.parent.name in ("s1", "s2"))


@pytest.mark.parametrize("uri, endpoint", [
    ("s3://acgan-test/x", "http://user:hunter2-secret@127.0.0.1:1"),
    ("s3://acgan-test/x", "ftp://user:hunter2-secret@127.0.0.1:1"),
    ("s3://KEYID:hunter2-secret@acgan-test/x", "http://127.0.0.1:1"),
])
def test_credentials_in_uris_are_refused_and_redacted(monkeypatch, capsys, uri, endpoint):
    with tally("credentials_in_uris_are_refused_and_redacted"):
        monkeypatch.setenv("ACGAN_S3_ENDPOINT", endpoint)
        assert main(["status", "--store", uri]) == 2
        err = capsys.readouterr().err
        (line,) = [ln for ln in err.splitlines() if "error:" in ln]
        assert "hunter2-secret" not in err and "***@" in line and "Traceback" not in err, err


@pytest.fixture(scope="module")
def finished_store(tmp_path_factory, _digits_template) -> LocalStore:
    """A store holding one of every JSON file: plan, experiment settings, both splits trained (config, stats,
    checkpoint markers), a live lease and the ensemble manifest."""
    root = tmp_path_factory.mktemp("hostile-json") / "store"
    shutil.copytree(_digits_template, root)
    store = LocalStore(root)
    write_json(store, EXPERIMENT_KEY, RunSettings(store=str(root), steps=5).model_dump(), checksum=True)
    for split in (0, 1):
        train_split(store, tiny_config(split=split, steps=5))
    assemble_ensemble(store, 5)
    lease = Lease(owner="node-a/1/x", expires=time.time() + 3600, acquired=time.time(), seconds=3600)
    store.write_bytes(lease_key(0), lease.model_dump_json().encode())
    return store


JSON_FILES = [PLAN_KEY, EXPERIMENT_KEY, ENSEMBLE_KEY, lease_key(0), config_key(0), stats_key(0),
              f"{checkpoint_prefix(0, 5)}/{MARKER}"]
HOSTILE_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12), st.just("HUGE"),
              st.just("../../etc/passwd")),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8)


def _hostile_text(original: dict | None, data) -> str:
    """Either any JSON value, or the original object with one key's value replaced by one; a 5000-digit number in
    place of "HUGE" (json.dumps itself refuses to write one)."""
    if isinstance(original, dict) and original and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(original)))
        value = {**original, key: data.draw(HOSTILE_JSON)}
    else:
        value = data.draw(HOSTILE_JSON)
    return json.dumps(value).replace('"HUGE"', HUGE)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(JSON_FILES), data=st.data())
def test_hostile_contents_of_every_store_json_file(finished_store, capsys, key, data):
    """Whatever a store's JSON file holds: status answers or explains in one line (exit 2), a damaged marker falls
    back to the previous checkpoint, a damaged stats file is skipped: never a traceback."""
    store, original = finished_store, finished_store.read_bytes(key)
    hostile = _hostile_text(json.loads(original.splitlines()[0] if key.endswith(".jsonl") else original), data)
    with tally("hostile_contents_of_every_store_json_file"):  # after the draws: a discarded draw is no input
        try:
            store.write_bytes(key, hostile.encode())
            code = main(["status", "--store", str(store.root), "--verify"])
            err = capsys.readouterr().err
            assert code in (0, 2) and "Traceback" not in err, err
            if code == 2:
                assert len([ln for ln in err.splitlines() if "error:" in ln]) == 1, err
            if key.endswith(MARKER):
                latest = latest_checkpoint(store, 0)  # the only checkpoint verifies or is skipped: no exception
                assert latest is None or latest[0] == 5
            if key.endswith(".jsonl"):
                assert isinstance(read_stats(store, 0, 5), list)  # what a resume reads: no exception
            if key == ENSEMBLE_KEY:
                with contextlib.suppress(UserError):
                    load_ensemble(store)
        finally:
            store.write_bytes(key, original)
