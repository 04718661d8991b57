"""The run's progress events (acgan/progress.py): written by many processes at once into one file, read as it
grows, and nothing where no file is named (a cluster's pod)."""

import multiprocessing
import os

import pytest

from acgan import progress


def _write_many(path: str, split: int, n: int) -> None:
    os.environ[progress.ENVIRONMENT] = path
    for step in range(1, n + 1):
        progress.emit(progress.TRAIN, "progress", part=progress.STEPS, split=split, step=step, total=n,
                      figures={"loss_d": 0.5 + step})


def test_events_of_processes_writing_at_once_arrive_whole_and_in_order(tmp_path):
    path = progress.events_file(tmp_path)
    writers = [multiprocessing.get_context("fork").Process(target=_write_many, args=(str(path), split, 300))
               for split in range(3)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    reader = progress.EventReader(path)
    events = reader.read()
    assert reader.damaged == 0 and len(events) == 900
    for split in range(3):
        assert [e.step for e in events if e.split == split] == list(range(1, 301))
    assert events[0].figures == {"loss_d": 1.5} and events[0].stage == "train-split"
    assert reader.read() == []  # nothing new


def test_a_line_being_written_is_read_once_it_ends_and_a_damaged_one_is_skipped(tmp_path, monkeypatch):
    path = progress.events_file(tmp_path)
    monkeypatch.setenv(progress.ENVIRONMENT, str(path))
    progress.emit(progress.PLAN, "start")
    whole = path.read_bytes()
    reader = progress.EventReader(path)
    path.write_bytes(whole + b'{"stage": "prepare-data", "ki')  # a writer part way through its line
    assert [e.kind for e in reader.read()] == ["start"]
    with open(path, "ab") as f:
        f.write(b'nd": "done", "time": 1.0}\nnot json\n')
    assert [e.kind for e in reader.read()] == ["done"] and reader.damaged == 1


def test_without_a_file_named_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.delenv(progress.ENVIRONMENT, raising=False)
    monkeypatch.chdir(tmp_path)
    progress.emit(progress.EVALUATE, "progress", part=progress.SPLITS, step=1, total=2)
    assert list(tmp_path.iterdir()) == []


def test_an_event_outside_the_schema_is_refused_where_it_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv(progress.ENVIRONMENT, str(progress.events_file(tmp_path)))
    with pytest.raises(ValueError):
        progress.emit(progress.TRAIN, "progress", stepp=3)
