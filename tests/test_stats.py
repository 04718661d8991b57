"""acgan/stats.py: the stats file's one reader keeps every intact tick and drops damaged lines with one warning; the
writer rewrites the file whole, keeping a resumed run's earlier ticks."""

import json
import logging

from acgan.layout import stats_key
from acgan.stats import StatsFile, read_stats
from acgan.store import LocalStore


def _tick(step: int) -> dict:
    return {"step": step, "loss_d": 1.0, "ms_ssim": {"3": 0.2, "4": 0.25}}


def test_damaged_lines_are_dropped_with_one_warning(tmp_path, caplog):
    store = LocalStore(tmp_path)
    damaged = [b"\x00{{{", b'{"step": "5"}', b'{"step": 7, "ms_ssim": {"3": "high"}}', b'{"step": 8, "ms_ssim": {}}',
               b'{"step": 9, "ms_ssim": {"3": true}}', b"[1, 2]", b'{"st\xffp": 10, "ms_ssim": {"3": 0.2}}']
    lines = [json.dumps(_tick(5)).encode(), *damaged, json.dumps(_tick(10)).encode(), b""]
    store.write_bytes(stats_key(2), b"\n".join(lines))
    with caplog.at_level(logging.WARNING, logger="acgan.stats"):
        assert read_stats(store, 2) == [_tick(5), _tick(10)]
    (warning,) = caplog.records
    expected = f"{store.uri}/{stats_key(2)}: dropped {len(damaged)} damaged line(s); the rest is kept"
    assert warning.getMessage() == expected


def test_ticks_up_to_a_step_and_none_before_the_first(tmp_path):
    store = LocalStore(tmp_path)
    assert read_stats(store, 0) == []
    store.write_bytes(stats_key(0), "".join(json.dumps(_tick(s)) + "\n" for s in (5, 10, 15)).encode())
    assert [t["step"] for t in read_stats(store, 0, 10)] == [5, 10]


def test_a_resumed_run_keeps_the_ticks_up_to_its_start(tmp_path):
    store = LocalStore(tmp_path)
    first = StatsFile(store, 0, 0)
    for step in (5, 10, 15):
        first.append(_tick(step))
    resumed = StatsFile(store, 0, 10)
    resumed.append(_tick(15) | {"loss_d": 0.5})
    assert read_stats(store, 0) == [_tick(5), _tick(10), _tick(15) | {"loss_d": 0.5}]
