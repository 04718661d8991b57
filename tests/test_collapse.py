"""acgan/collapse.py: the threshold is the real data's least diverse class over the splits prepared so far; the alarm
holds where the newest tick has a class at or above it, and names the newest kept checkpoint whose tick was under."""

import json

from acgan.checkpoint import save_checkpoint
from acgan.collapse import CollapseAlarm, collapse_alarm, collapse_threshold
from acgan.layout import real_diversity_key, stats_key
from acgan.store import LocalStore, write_json


def test_the_threshold_is_the_least_diverse_real_class(tmp_path):
    store = LocalStore(tmp_path)
    assert collapse_threshold(store) is None  # no split prepared yet
    write_json(store, real_diversity_key(0), {"classes": {"0": 0.30, "1": 0.20}})
    write_json(store, real_diversity_key(1), {"classes": {"2": 0.45}})
    assert collapse_threshold(store) == 0.45


def test_the_alarm_names_the_last_healthy_kept_checkpoint(tmp_path):
    store = LocalStore(tmp_path)
    for step in (10, 15):  # step 5's checkpoint was pruned
        save_checkpoint(store, 0, step, {"a.bin": b"x"})
    ticks = [{"step": 5, "ms_ssim": {"3": 0.1}}, {"step": 10, "ms_ssim": {"3": 0.2}},
             {"step": 15, "ms_ssim": {"3": 0.6, "4": 0.1}}]
    store.write_bytes(stats_key(0), "".join(json.dumps(t) + "\n" for t in ticks).encode())
    assert collapse_alarm(store, 0, 0.5) == CollapseAlarm(step=15, classes={"3": 0.6}, threshold=0.5,
                                                          last_healthy_checkpoint=10)
    assert collapse_alarm(store, 0, 0.15) == CollapseAlarm(step=15, classes={"3": 0.6}, threshold=0.15,
                                                           last_healthy_checkpoint=None)
    assert collapse_alarm(store, 0, 0.7) is None and collapse_alarm(store, 0, None) is None
    assert collapse_alarm(store, 1, 0.5) is None  # no stats yet
