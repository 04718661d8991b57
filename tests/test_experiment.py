"""What `acgan run` and the plan make of what a store holds (issue 36): a refused settings change writes nothing,
a continued store keeps its recorded settings, dropping the averaged generator is refused, and the plan judges a
checkpoint by its files, as the assembly does. Real training steps on the prepared digits store. And a bad value in
a stored experiment.json is named with its file."""

from __future__ import annotations

import json

import pytest

from acgan.checkpoint import complete_steps
from acgan.ensemble import assemble_ensemble
from acgan.errors import UserError
from acgan.experiment import continued_settings, load_settings, prepare_experiment, train_one_split
from acgan.layout import EXPERIMENT_KEY
from acgan.settings import RunSettings
from acgan.store import open_store, write_json
from acgan_cli.main import main
from tests.conftest import stored_file

TINY = dict(steps=10, checkpoint_every=5, batch_size=16, width=0.0625, d_width=0.25, samples_per_class=8, pairs=8,
            classifier_steps=30)


def _trained(store, **settings) -> RunSettings:
    """Both splits trained to their target with `settings` recorded, as `acgan run` leaves a store."""
    run = RunSettings(store=store.uri, **{**TINY, **settings})
    prepare_experiment(run)
    for split in (0, 1):
        train_one_split(store, split)
    return run


def _one_line_error(capsys, code: int) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_a_refused_settings_change_writes_nothing(digits_store, capsys):
    """`acgan run --width 0.25` on a store trained at 0.0625: refused before anything is written, so the advised
    rerun still works with the recorded settings (experiment.json said 0.25 after the refusal before)."""
    _trained(digits_store)
    before = {k: digits_store.read_bytes(k) for k in digits_store.list("")}
    line = _one_line_error(capsys, main(["run", "--store", digits_store.uri, "--width", "0.25"]))
    assert "split 0 has checkpoints of a different model (" in line and "width 0.0625" in line, line
    with pytest.raises(UserError, match="split 0 has checkpoints of a different model"):
        prepare_experiment(load_settings(digits_store).model_copy(update={"width": 0.25}))
    assert {k: digits_store.read_bytes(k) for k in digits_store.list("")} == before
    assert load_settings(digits_store).width == 0.0625


def test_continuing_a_store_keeps_its_settings_and_refuses_to_drop_the_average(digits_store, capsys):
    """A store trained with --ema-kimg 1, continued without the flag, went on without the average (and pruned the
    checkpoints that had it). Its recorded settings are kept now; --ema-kimg 0 given explicitly is refused."""
    _trained(digits_store, ema_kimg=1.0)
    continued = continued_settings({"store": digits_store.uri, "steps": 20})
    assert (continued.ema_kimg, continued.width, continued.steps, continued.preset) == (1.0, 0.0625, 20, "demo")
    assert continued_settings({"store": digits_store.uri, "preset": "paper"}).width == 1.0  # another preset: its own
    before = digits_store.read_bytes(EXPERIMENT_KEY)
    line = _one_line_error(capsys, main(["run", "--store", digits_store.uri, "--ema-kimg", "0"]))
    assert "split 0's checkpoints keep an averaged generator (--ema-kimg 1.0); --ema-kimg 0 would drop it" in line
    assert digits_store.read_bytes(EXPERIMENT_KEY) == before
    prepare_experiment(continued)  # kept: accepted, and recorded
    train_one_split(digits_store, 0)
    assert complete_steps(digits_store, 0) == [15, 20]
    meta = json.loads(digits_store.read_bytes(stored_file(digits_store, 0, 20, "meta.json")))
    assert meta["ema"] is True and meta["train"]["ema_kimg"] == 1.0


def test_the_plan_and_the_assembly_judge_a_checkpoint_alike(digits_store, caplog):
    """The newest checkpoint of both splits truncated: the plan trusted their markers and fanned out over one split
    ("2 already at their 10 steps"), and the assembly then failed naming the other. Both read the files now."""
    settings = _trained(digits_store)
    for split in (0, 1):
        key = stored_file(digits_store, split, 10, "train_state.safetensors")
        digits_store.write_bytes(key, digits_store.read_bytes(key)[:-100])
    with pytest.raises(UserError, match=r"2 of 2 splits are not ready \(split 0: .*does not match its checksum"):
        assemble_ensemble(digits_store, 10)
    assert prepare_experiment(settings) == [0, 1]
    for split in (0, 1):
        train_one_split(digits_store, split)
    assert {m.step for m in assemble_ensemble(digits_store, 10).classes} == {10}


def test_a_bad_value_in_experiment_json_names_the_file(tmp_path):
    store = open_store(str(tmp_path / "store"))
    saved = RunSettings(store=store.uri, **TINY).model_dump()
    write_json(store, EXPERIMENT_KEY, {**saved, "d_width": -1}, checksum=True)  # as written, then damaged: a bug
    with pytest.raises(UserError, match=r"experiment\.json: d_width: Input should be greater than 0; correct the file"):
        load_settings(store)
