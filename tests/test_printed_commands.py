"""Every command a message advises runs as printed (issue 36): `acgan rerun --store S` lacked --host/--local, "lower
--lr" named no flag `acgan run` had, `acgan prepare` refused the store it was advised for, and no path was quoted.
Commands with values are built in one place (acgan.errors.command: shell-quoted); this test greps the sources for
every one and requires, for each subcommand, a test that runs a printed instance of it exactly as printed
(tests.conftest.run_printed), or, where running it is a whole training run, that it parses as printed."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from acgan_cli.main import build_parser
from tests.conftest import printed_commands, run_printed

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [p for folder in ("acgan", "components", "pipelines", "acgan_cli") for p in (ROOT / folder).rglob("*.py")]

# Subcommand -> the tests that run a printed instance of it as printed (each calls run_printed).
RUN_AS_PRINTED = {
    "rerun": ["tests/faults/test_killed_run.py::test_a_failing_tasks_reason_is_the_runs_last_line_and_its_advice_"
              "runs_as_printed"],
    "prepare": ["tests/data/test_prepare.py::test_a_shard_whose_labels_and_images_differ_in_length_is_one_line",
                "tests/data/test_prepare.py::test_prepare_again_restores_a_missing_shard"],
    "unlock": ["tests/test_printed_commands.py::test_the_unlock_and_status_a_lease_names_run_as_printed"],
    "status": ["tests/test_printed_commands.py::test_the_unlock_and_status_a_lease_names_run_as_printed"],
}
# Subcommands whose printed instances start a whole training or evaluation run, or need a trained split (the collapse
# alarm's `acgan sample`): checked to parse as printed.
PARSED_AS_PRINTED = {"run", "evaluate", "train-split", "sample"}


def _advised_subcommands() -> dict[str, list[str]]:
    """Every `command("acgan", SUB, ...)` call in the sources, and `rerun_command(...)`: SUB -> where."""
    found: dict[str, list[str]] = {}
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                if node.func.id == "rerun_command":
                    sub = "rerun"
                elif node.func.id == "command" and len(node.args) > 1 and isinstance(node.args[1], ast.Constant):
                    sub = node.args[1].value
                else:
                    continue
                found.setdefault(sub, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_no_message_formats_a_command_by_hand():
    """A command with a value in it (a store, a split) comes from errors.command, which quotes it: an f-string
    holding "`acgan " would not be."""
    by_hand = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.JoinedStr):  # a value inside the backticks shows as NUL
                text = "".join(v.value if isinstance(v, ast.Constant) else "\0" for v in node.values)
                # `acgan bench --markdown` records the command that made its table (its own flags, never a path).
                by_hand += [f"{path.relative_to(ROOT)}:{node.lineno}: {found}" for found in
                            re.findall(r"`acgan [^`]*`", text) if "\0" in found and "`acgan bench " not in found]
    assert by_hand == []


def test_every_advised_command_is_run_or_parsed_as_printed_by_a_test():
    advised = _advised_subcommands()
    assert set(advised) == set(RUN_AS_PRINTED) | PARSED_AS_PRINTED, advised
    for sub, tests in RUN_AS_PRINTED.items():
        for test in tests:
            file, name = test.split("::")
            source = (ROOT / file).read_text()
            assert f"def {name}(" in source, test
            body = source[source.index(f"def {name}("):].split("\ndef ", 1)[0]
            assert "run_printed(" in body, f"{test} does not run {sub!r} as printed"


@pytest.mark.parametrize("message", [
    # TrainingDiverged's advice (acgan/training/loop.py, _lower_lr), the settings' record (experiment.load_settings),
    # the comparison's (evaluation/comparison.py), a split without checkpoints (sampling.load_split_generator).
    "continue with half the learning rate: `acgan run --store '/data/my store' --lr 0.0001`",
    "start it with `acgan run --store '/data/my store'` (or `acgan submit` on a cluster) first",
    "run `acgan evaluate --store '/data/my store' --analyses discriminability,diversity` (or with every analysis",
    "run `acgan train-split --store '/data/my store' --split 1` first",
])
def test_commands_that_start_a_run_parse_as_printed(message):
    argv = printed_commands(message)[0]
    args = build_parser().parse_args(argv[1:])
    assert args.store == "/data/my store" and argv[1] in PARSED_AS_PRINTED


def test_the_collapse_alarms_advice_parses_as_printed():
    """`acgan status`'s collapse alarm names the `acgan sample` that shows the worst class (a store path with a
    space)."""
    from acgan.collapse import CollapseAlarm, describe

    alarm = CollapseAlarm(step=900, classes={"6": 0.732, "1": 0.70}, threshold=0.676, last_healthy_checkpoint=600)
    argv = printed_commands(describe(alarm, "/data/my store"))[0]
    args = build_parser().parse_args(argv[1:])
    assert argv[1] == "sample" and args.store == "/data/my store" and str(args.out) == "class-6.png"


def test_the_diverged_advice_is_what_loop_prints():
    """The message above is the loop's own, for a store path with a space."""
    from acgan.store import LocalStore
    from acgan.training.loop import _lower_lr
    from tests.conftest import tiny_config

    store = LocalStore(Path("/data/my store"))
    assert _lower_lr(store, tiny_config(lr=2e-4)).endswith("`acgan run --store '/data/my store' --lr 0.0001`")


def test_the_unlock_and_status_a_lease_names_run_as_printed(digits_store, tmp_path, capsys):
    """A damaged lease names `acgan unlock ... --force`; a local run's lease names `acgan status`: both, pasted,
    run (a store path with a space)."""
    import shutil

    from acgan.errors import UserError
    from acgan.layout import lease_key
    from acgan.lease import RunLease, SplitBusy, read_lease
    from acgan.store import open_store

    shutil.copytree(digits_store.root, tmp_path / "my store")
    store = open_store(str(tmp_path / "my store"))
    store.write_bytes(lease_key(1), b'{"owner": "x"}')
    with pytest.raises(UserError) as damaged:
        read_lease(store, 1)
    assert run_printed(str(damaged.value)) == 0 and not store.exists(lease_key(1))
    held = RunLease(store, 60)
    held.acquire()
    try:
        with pytest.raises(SplitBusy) as busy:
            RunLease(store, 60).acquire()
        capsys.readouterr()
        assert run_printed(str(busy.value)) == 0 and "splits complete" in capsys.readouterr().out
    finally:
        held.release()
