"""`acgan bench --only serve`: what `acgan serve` delivers, against the generator drawn exactly as the server draws.

A real server process on loopback and real HTTP clients (threads, one keep-alive connection each, the images in the
protocol's binary form so that the clients' decoding stays small beside the server's work), for n=1 and n=64 images
a request at 1 and 16 concurrent clients, with batching on (the server's defaults) and off (`--batch-wait-ms 0` and
forward passes of exactly the request's n: one plain forward pass per request, as a server without batching runs).
Every request asks for a class of the same split, the case batching is for.

What the server is compared with: the batches the server formed in a served window (how many requests each, read
from its /metrics: `acgan_serve_batch_requests` counts every size up to 16), replayed through the same `draw`
(acgan/serving/batching.py) with the same forward batch, on one executor thread, in a process of its own loaded as
the server loads (torch's default threads, the tuned allocator), in a window of the same length right after. Each
round is one served window and its replay; the ratio is the median of the rounds' and its spread their range; the
CPU seconds per image of both processes come from /proc. A server cannot deliver more than the generator it runs:
a ratio above 1 beyond the spread is reported as a measurement error, and no ratio is ever "met" by being above 1.
On a CPU the ensemble has the embedded run's shape (32 px, G at width 0.125 from the ImageNet G's 8x8 start), on a
GPU the paper's (128 px, full width); its weights are untrained, which costs the same.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.client
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from acgan.checkpoint import load_checkpoint
from acgan.layout import GENERATOR_FILE, META_FILE
from acgan.process import stop_process
from acgan.sampling import generator_from_files
from acgan.serving.batching import default_forward_batch
from acgan.store import LocalStore
from acgan_cli.benchmarks.ensemble import untrained_ensemble
from acgan_cli.benchmarks.machine import Row, device_name

MODEL = "acgan-ensemble"
SIZES = (1, 64)
CLIENTS = (1, 16)
SERVING = re.compile(r"inference POST http://127\.0\.0\.1:(\d+)/v2/models/")
BATCH_BUCKET = re.compile(r'^acgan_serve_batch_requests_bucket\{le="([0-9.]+)"\} (\S+)$', re.M)


@contextlib.contextmanager
def serve_process(store: Path, device: torch.device, log: Path, *options: str):
    """`acgan serve` on a free loopback port; yields (the port, the process id)."""
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "acgan_cli.main", "serve", "--store", str(store), "--port", "0",
                                 "--device", device.type, "--max-images", str(max(SIZES)), *options],
                                stdout=out, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[2])
    try:
        deadline = time.time() + 300
        while not (found := SERVING.search(log.read_text())):
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"acgan serve did not start: {(log.read_text().strip().splitlines() or ['-'])[-1]}")
            time.sleep(0.2)
        yield int(found.group(1)), proc.pid
    finally:
        stop_process(proc, 30)


def _body(cls: int, n: int, seed: int) -> bytes:
    return json.dumps({"inputs": [{"name": "class", "shape": [1], "datatype": "INT64", "data": [cls]},
                                  {"name": "n", "shape": [1], "datatype": "INT64", "data": [n]},
                                  {"name": "seed", "shape": [1], "datatype": "INT64", "data": [seed]}],
                       "outputs": [{"name": "images", "parameters": {"binary_data": True}}]}).encode()


def client_load(port: int, n: int, clients: int, seconds: float, classes: list[int]) -> tuple[float, list[float]]:
    """(requests per second, latencies in s) of `clients` clients asking for n images each, as fast as answered,
    for `seconds` after two warm-up requests each."""
    latencies: list[float] = []
    failures: list[str] = []
    start = threading.Barrier(clients + 1)

    def one_client(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        k = 0

        def ask() -> float:
            nonlocal k
            k += 1
            sent = time.perf_counter()
            connection.request("POST", f"/v2/models/{MODEL}/infer", _body(classes[k % len(classes)], n,
                                                                           index * 1_000_000 + k),
                               {"Content-Type": "application/json"})
            answer = connection.getresponse()
            data = answer.read()
            if answer.status != 200:
                raise RuntimeError(f"HTTP {answer.status}: {data[:200]!r}")
            return time.perf_counter() - sent

        try:
            ask(), ask()
            start.wait()
            while time.perf_counter() < stop_at:
                latencies.append(ask())
        except Exception as e:  # noqa: BLE001 - reported as the benchmark's failure
            failures.append(str(e))
            start.abort()
        finally:
            connection.close()

    threads = [threading.Thread(target=one_client, args=(i,)) for i in range(clients)]
    stop_at = float("inf")
    for t in threads:
        t.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        start.wait()
    began = time.perf_counter()
    stop_at = began + seconds
    for t in threads:
        t.join()
    if failures:
        raise RuntimeError(f"a client failed: {failures[0]}")
    return len(latencies) / (time.perf_counter() - began), latencies


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far, every thread, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


def batch_sizes(port: int) -> dict[int, int]:
    """How many batches of each number of requests the server has drawn so far (its /metrics' histogram, whose
    buckets are every size up to the most clients here)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    up_to = {int(float(le)): float(count) for le, count in BATCH_BUCKET.findall(text)}
    return {k: int(up_to[k] - up_to.get(k - 1, 0.0)) for k in range(1, max(CLIENTS) + 1)}


def _generator_process(connection, store_root: str, device: str, step: int) -> None:
    """The generator drawn exactly as `acgan serve` draws it, in a process of its own: split 0's G loaded as the
    server loads it, `draw` on one executor thread, one batch at a time. Answers (batches, n, forward batch, seconds)
    with (images, wall seconds, this process's CPU seconds): the batches (each a number of requests of n images)
    drawn in turn, again and again, for `seconds`."""
    from acgan import allocator
    from acgan.serving.batching import draw

    allocator.tune()  # as `acgan serve`'s process (acgan_cli.main)
    files = load_checkpoint(LocalStore(Path(store_root)), 0, step, [GENERATOR_FILE, META_FILE])
    G = generator_from_files(files, torch.device(device))[0]
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="acgan-forward") as thread:
        while (command := connection.recv()) is not None:
            batches, n, forward_batch, seconds = command
            wanted = [[(0, n, 1000 * b + k) for k in range(requests)] for b, requests in enumerate(batches)]
            thread.submit(draw, G, wanted[0], forward_batch).result()  # warm, as the clients' first requests are
            images, drawn, cpu, began = 0, 0, cpu_seconds(os.getpid()), time.perf_counter()
            while time.perf_counter() - began < seconds:
                images += len(thread.submit(draw, G, wanted[drawn % len(wanted)], forward_batch).result())
                drawn += 1
            connection.send((images, time.perf_counter() - began, cpu_seconds(os.getpid()) - cpu))


@contextlib.contextmanager
def generator_process(store: Path, device: torch.device, step: int = 1):
    """A function replay(batches, n, forward_batch, seconds) -> (images/s, CPU seconds per image) of split 0's
    checkpoint `step`, run in `_generator_process`."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    proc = context.Process(target=_generator_process, args=(theirs, str(store), device.type, step),
                           daemon=True)
    proc.start()

    def replay(batches: list[int], n: int, forward_batch: int, seconds: float) -> tuple[float, float]:
        ours.send((batches, n, forward_batch, seconds))
        images, wall, cpu = ours.recv()
        return images / wall, cpu / images

    try:
        yield replay
    finally:
        ours.send(None)
        proc.join(30)
        if proc.is_alive():
            proc.kill()


def ratio_row(figure: str, ratios: list[float], device: str, note: str) -> Row:
    """The median of the rounds' served / own ratios, with their spread. A server cannot deliver more than the
    generator it runs, so a ratio above 1 beyond the spread (every round's above 1) means the two were not measured
    alike: a measurement error. A median above 1 within the spread says the two are equal to this measurement's
    precision; neither is a target met."""
    low, high, median = min(ratios), max(ratios), float(np.median(ratios))
    note = f"median of {len(ratios)} rounds, spread {low:.3f}-{high:.3f}; {note}"
    if low > 1:
        note = f"MEASUREMENT ERROR: above 1 beyond the spread, which no server can reach; {note}"
    elif median > 1:
        note = f"equal within the spread (above 1 is no server's figure, so not a target met); {note}"
    return Row(figure=figure, unit="x", target="0.7 to 1 (above 1 beyond the spread: a measurement error)",
               measured=median, device=device, note=note)


def bench_serve(device: torch.device, seconds: float | None = None, rounds: int = 5) -> list[Row]:
    """For each load (n, clients, batching on or off) and each of `rounds` rounds: a window of `seconds` served to
    real clients, with the server process's CPU time from /proc and the batches it formed from its /metrics, then a
    window of the same length in which `_generator_process` replays those batches (the same `draw` and forward
    batch, on an executor thread, in a process of its own). The loads take turns within a round, so that a machine
    whose load changes meets every load and both sides of each alike."""
    gpu = device.type == "cuda"
    seconds = seconds or 2.0
    shape = dict(resolution=128, width=1.0, classes_per_split=10) if gpu else \
        dict(resolution=32, width=0.125, classes_per_split=5, g_layout="imagenet-start")
    on_batch = default_forward_batch(device, shape["resolution"])
    rounds_of: dict[tuple, list[dict]] = {}  # (n, clients, mode) -> each round's figures
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as servers:
        store = LocalStore(Path(tmp) / "store")
        plan = untrained_ensemble(store, 2 * shape["classes_per_split"], **shape)
        replay = servers.enter_context(generator_process(store.root, device))
        options = {"on": (), **{f"off {n}": ("--batch-wait-ms", "0", "--forward-batch", str(n)) for n in SIZES}}
        procs = {mode: servers.enter_context(serve_process(store.root, device, Path(tmp) / f"{mode}.log", *given))
                 for mode, given in options.items()}
        for _ in range(rounds):
            for key in [(n, clients, mode) for n in SIZES for clients in CLIENTS for mode in ("on", "off")]:
                n, clients, mode = key
                port, pid = procs["on" if mode == "on" else f"off {n}"]
                cpu, before = cpu_seconds(pid), batch_sizes(port)
                rps, latencies = client_load(port, n, clients, seconds, plan.splits[0])
                images = (len(latencies) + 2 * clients) * n  # with the two warm-up requests of each client
                served_cpu = (cpu_seconds(pid) - cpu) / images
                formed = {k: c - before[k] for k, c in batch_sizes(port).items() if c > before[k]}
                batches = [k for k, count in sorted(formed.items()) for _ in range(count)]
                own_rate, own_cpu = replay(batches, n, on_batch if mode == "on" else n, seconds)
                rounds_of.setdefault(key, []).append(dict(
                    rps=rps, latencies=latencies, cpu=served_cpu, own_rate=own_rate, own_cpu=own_cpu,
                    requests_per_batch=sum(batches) / len(batches)))
    return _rows(rounds_of, shape, device_name(device))


def _rows(rounds_of: dict[tuple, list[dict]], shape: dict, name: str) -> list[Row]:
    rows = []
    for (n, clients, mode), taken in sorted(rounds_of.items(), key=lambda kv: (kv[0][2] == "off", kv[0][:2])):
        median = {k: float(np.median([t[k] for t in taken])) for k in ("rps", "cpu", "own_rate", "own_cpu",
                                                                       "requests_per_batch")}
        latencies = [t for r in taken for t in r["latencies"]]
        p50, p99 = (1000 * float(np.percentile(latencies, q)) for q in (50, 99))
        rows.append(Row(figure=f"acgan serve, n={n}, {clients} concurrent client(s), batching {mode}",
                        unit="requests/s", target="-", measured=median["rps"], device=name,
                        note=f"p50 {p50:.0f} ms, p99 {p99:.0f} ms; {median['rps'] * n:,.0f} images/s, "
                             f"{1000 * median['cpu']:.2f} ms of the server's CPU per image, "
                             f"{median['requests_per_batch']:.1f} requests a batch; its batches drawn alike: "
                             f"{median['own_rate']:,.0f} images/s, {1000 * median['own_cpu']:.2f} ms of CPU per "
                             f"image; medians of {len(taken)} rounds, {len(latencies)} requests"))
    net = f"{shape['resolution']} px, G at width {shape['width']}"
    for clients_n in ((16, 64), (16, 1)):
        taken = rounds_of[(clients_n[1], clients_n[0], "on")]
        rows.append(ratio_row(f"served / its batches drawn as the server draws, {clients_n[0]} concurrent "
                              f"n={clients_n[1]} clients, batching on",
                              [t["rps"] * clients_n[1] / t["own_rate"] for t in taken], name,
                              f"images/s in adjacent windows of equal length ({net})"))
    taken = rounds_of[(64, 16, "on")]
    rows.append(ratio_row("the generator's CPU per image / the server's, 16 concurrent n=64 clients, batching on",
                          [t["own_cpu"] / t["cpu"] for t in taken], name, "CPU seconds per image from /proc"))
    on, off = rounds_of[(1, 16, "on")], rounds_of[(1, 16, "off")]
    rows.append(Row(figure="batching speed-up, 16 concurrent n=1 clients (requests/s, on / off)", unit="x",
                    target=">= 4 on a GPU", measured=float(np.median([a["rps"] / b["rps"] for a, b in zip(on, off)])),
                    device=name, note=f"median of {len(on)} rounds"))
    return rows
