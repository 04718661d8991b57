"""`acgan bench --only serve`'s parts (acgan_cli/benchmarks/serve.py) on a small untrained ensemble: its clients
measure a real server, the batches the server formed are read from its /metrics and replayed in a process of its
own, and a served/own ratio above 1 is never a target met. No speed is asserted."""

import torch

from acgan.store import LocalStore
from acgan_cli.benchmarks.ensemble import untrained_ensemble
from acgan_cli.benchmarks.serve import (CLIENTS, SIZES, _rows, batch_sizes, client_load, cpu_seconds,
                                        generator_process, ratio_row, serve_process)


def test_the_clients_the_batches_and_their_replay(tmp_path):
    store = LocalStore(tmp_path / "store")
    plan = untrained_ensemble(store, 4, resolution=32, width=0.125, classes_per_split=4, g_layout="imagenet-start")
    cpu = torch.device("cpu")
    with serve_process(store.root, cpu, tmp_path / "serve.log") as (port, pid), \
            generator_process(store.root, cpu) as replay:
        before, used = batch_sizes(port), cpu_seconds(pid)
        rate, latencies = client_load(port, 2, 4, 1.0, plan.splits[0])
        formed = {k: count - before[k] for k, count in batch_sizes(port).items()}
        assert cpu_seconds(pid) > used
        own_rate, own_cpu = replay([k for k, count in formed.items() for _ in range(count)], 2, 16, 0.3)
    assert rate > 0 and len(latencies) >= 4 and all(0 < t < 60 for t in latencies)
    assert sum(k * count for k, count in formed.items()) == len(latencies) + 2 * 4  # the warm-up requests too
    assert own_rate > 0 and 0 < own_cpu < 1


def test_a_ratio_above_one_is_never_a_target_met():
    beyond = ratio_row("f", [1.05, 1.2, 1.1], "cpu", "x")
    assert beyond.measured == 1.1 and beyond.note.startswith("MEASUREMENT ERROR: above 1 beyond the spread")
    within = ratio_row("f", [0.98, 1.03, 1.02], "cpu", "x")
    assert within.measured == 1.02 and within.note.startswith("equal within the spread (above 1 is no server's")
    assert ratio_row("f", [0.8, 0.95, 0.9], "cpu", "x").note == "median of 3 rounds, spread 0.800-0.950; x"


def test_the_rows_of_every_load():
    """The table from made-up rounds: one row per load, the served/own ratios from the rounds' own pairs."""
    rounds = {(n, clients, mode): [dict(rps=10.0 * k, latencies=[0.01, 0.02], cpu=0.002, own_rate=20.0 * k * n,
                                        own_cpu=0.001, requests_per_batch=2.0) for k in (1, 2, 3)]
              for n in SIZES for clients in CLIENTS for mode in ("on", "off")}
    rows = _rows(rounds, {"resolution": 32, "width": 0.125}, "cpu")
    assert len(rows) == 4 * len(SIZES) * len(CLIENTS) // 2 + 4
    ratios = {r.figure: r for r in rows if r.unit == "x"}
    served = ratios["served / its batches drawn as the server draws, 16 concurrent n=64 clients, batching on"]
    assert served.measured == 0.5 and served.note.startswith("median of 3 rounds, spread 0.500-0.500")
    assert ratios["the generator's CPU per image / the server's, 16 concurrent n=64 clients, batching on"].measured \
        == 0.5
    assert rows[0].figure == "acgan serve, n=1, 1 concurrent client(s), batching on" and rows[0].measured == 20.0
