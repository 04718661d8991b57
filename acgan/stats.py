"""A split's training stats, `splits/split-NNNNN/stats.jsonl`: one JSON line per tick with the losses, D's source and
class accuracy on real and fake images, and per class the MS-SSIM of fixed samples (`ms_ssim`, class id as text ->
value). Training writes it (`StatsFile`); resume, `acgan status`, the collapse alarm, the split's page and the
evaluation read it, all through `read_stats`.
"""

from __future__ import annotations

import json
import logging
import math

from acgan.errors import UserError
from acgan.layout import stats_key
from acgan.store import Store

log = logging.getLogger(__name__)

# Each tick's MS-SSIM protocol: this many fixed samples per class, this many pairs of them (the collapse alarm
# measures the real images alike, so the two are comparable).
SAMPLES_PER_CLASS = 16
PAIRS = 100


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _tick(line: str) -> dict | None:
    """A line's tick, or None for a damaged one (a flipped byte, a cut write, another shape)."""
    try:
        tick = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not (isinstance(tick, dict) and isinstance(tick.get("step"), int) and isinstance(tick.get("ms_ssim"), dict)
            and tick["ms_ssim"] and all(map(_number, tick["ms_ssim"].values()))):
        return None
    return tick


def read_stats(store: Store, split: int, up_to: float = math.inf) -> list[dict]:
    """The split's ticks of steps up to `up_to`, oldest first; none before its first tick. Damaged lines are dropped
    with one warning: the stats are a record, never a reason not to resume or to fail `acgan status`."""
    key = stats_key(split)
    try:
        text = store.read_bytes(key).decode("utf-8", errors="replace")
    except KeyError:
        return []
    ticks = [_tick(line) for line in text.splitlines() if line]
    dropped = ticks.count(None)
    if dropped:
        log.warning("%s/%s: dropped %d damaged line(s); the rest is kept", store.uri, key, dropped)
    return [tick for tick in ticks if tick is not None and tick["step"] <= up_to]


class StatsFile:
    """The split's stats file, rewritten whole at each tick (a store has no append); a resumed run keeps the ticks up
    to the step it resumes from."""

    def __init__(self, store: Store, split: int, start: int):
        self.store, self.split = store, split
        self.ticks = read_stats(store, split, start) if start else []

    def append(self, tick: dict) -> None:
        self.ticks.append(tick)
        try:  # best effort: the stats are a record, the checkpoints are the state
            self.store.write_bytes(stats_key(self.split), "".join(json.dumps(t) + "\n" for t in self.ticks).encode())
        except (UserError, OSError) as e:
            log.warning("split %d: stats line of step %d not written (%s); training continues", self.split,
                        tick["step"], e)
