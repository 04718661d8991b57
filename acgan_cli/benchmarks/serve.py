"""`acgan bench --only serve`: what `acgan serve` delivers, against the generator drawn exactly as the server draws.

A real server process on loopback and real HTTP clients (threads, one keep-alive connection each, the images in the
protocol's binary form so that the clients' decoding stays small beside the server's work), for n=1 and n=64 images
a request at 1 and 16 concurrent clients, with batching on (the server's defaults) and off (`--batch-wait-ms 0` and
forward passes of exactly the request's n: one plain forward pass per request, as a server without batching runs).
Every request asks for a class of the same split, the case batching is for.

What the server is compared with: the same `draw` (acgan/serving/batching.py), the same forward batch and the most
requests the batcher could put in one batch for that load, on one executor thread, in a process of its own (as the
server's), in a window of the same length just before each served window; and the CPU seconds per image of both
processes, from /proc. A server cannot deliver more than the generator it runs: a ratio above 1 is reported as a
measurement error. On a CPU the ensemble has the embedded run's shape (32 px, G at width 0.125 from the ImageNet
G's 8x8 start), on a GPU the paper's (128 px, full width); its weights are untrained, which costs the same.
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
from acgan.serving.batching import BATCH_PASSES, default_forward_batch
from acgan.store import LocalStore
from acgan_cli.benchmarks.ensemble import untrained_ensemble
from acgan_cli.benchmarks.machine import Row, device_name

MODEL = "acgan-ensemble"
SIZES = (1, 64)
CLIENTS = (1, 16)
SERVING = re.compile(r"inference POST http://127\.0\.0\.1:(\d+)/v2/models/")


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


def _generator_process(connection, store_root: str, device: str, step: int) -> None:
    """The generator drawn exactly as `acgan serve` draws it, in a process of its own: split 0's G loaded as the
    server loads it, `draw` on one executor thread, one batch at a time. Answers ("measure", wanted, forward batch,
    seconds) with (images, wall seconds, this process's CPU seconds)."""
    from acgan import allocator
    from acgan.serving.batching import draw

    allocator.tune()  # as `acgan serve`'s process (acgan_cli.main)
    files = load_checkpoint(LocalStore(Path(store_root)), 0, step, [GENERATOR_FILE, META_FILE])
    G = generator_from_files(files, torch.device(device))[0]
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="acgan-forward") as thread:
        while (command := connection.recv()) is not None:
            wanted, forward_batch, seconds = command
            thread.submit(draw, G, wanted, forward_batch).result()  # warm
            images, cpu, began = 0, cpu_seconds(os.getpid()), time.perf_counter()
            while time.perf_counter() - began < seconds:
                images += len(thread.submit(draw, G, wanted, forward_batch).result())
            connection.send((images, time.perf_counter() - began, cpu_seconds(os.getpid()) - cpu))


@contextlib.contextmanager
def generator_process(store: Path, device: torch.device, step: int = 1):
    """A function measure(wanted, forward_batch, seconds) -> (images/s, CPU seconds per image) of split 0's
    checkpoint `step`, run in `_generator_process`."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    proc = context.Process(target=_generator_process, args=(theirs, str(store), device.type, step),
                           daemon=True)
    proc.start()

    def measure(wanted: list[tuple[int, int, int]], forward_batch: int, seconds: float) -> tuple[float, float]:
        ours.send((wanted, forward_batch, seconds))
        images, wall, cpu = ours.recv()
        return images / wall, cpu / images

    try:
        yield measure
    finally:
        ours.send(None)
        proc.join(30)
        if proc.is_alive():
            proc.kill()


def server_batch(n: int, clients: int, forward_batch: int) -> int:
    """Requests the server's batcher draws together at most when `clients` clients keep asking for n images."""
    return max(1, min(clients, BATCH_PASSES * forward_batch // n))


def ratio_row(figure: str, ratio: float, device: str, note: str) -> Row:
    """served / the generator's own: a server cannot deliver more than the generator it runs, so above 1 the two
    were not measured alike and the figure is a measurement error, never a target met."""
    if ratio > 1:
        note = f"MEASUREMENT ERROR: above 1, which no server can reach; re-take it on a quiet machine. {note}"
    return Row(figure=figure, unit="x", target=">= 0.7 (above 1: a measurement error)", measured=ratio,
               device=device, note=note)


def bench_serve(device: torch.device, seconds: float | None = None, rounds: int = 3) -> list[Row]:
    """For each load (n, clients, batching on or off) and each round, a window of `seconds` of the generator drawn
    as the server draws that load (`_generator_process`: the same `draw`, forward batch and batch of requests, on an
    executor thread, in a process of its own) and then a window of the same length served to real clients, with
    the server process's CPU time from /proc. Rates are the best of `rounds`; the served/own ratio is the median of
    the rounds' ratios, each of two adjacent windows, so that a machine whose load changes meets both alike."""
    gpu = device.type == "cuda"
    seconds = seconds or (2.0 if gpu else 1.5)
    shape = dict(resolution=128, width=1.0, classes_per_split=10) if gpu else \
        dict(resolution=32, width=0.125, classes_per_split=5, g_layout="imagenet-start")
    name = device_name(device)
    on_batch = default_forward_batch(device, shape["resolution"])
    served: dict[tuple, list[tuple[float, list[float], float]]] = {}  # (n, clients, mode): (rps, latencies, CPU)
    own: dict[tuple, list[tuple[float, float]]] = {}  # the same keys -> (images/s, cpu/image)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as servers:
        store = LocalStore(Path(tmp) / "store")
        plan = untrained_ensemble(store, 2 * shape["classes_per_split"], **shape)
        measure = servers.enter_context(generator_process(store.root, device))
        options = {"on": (), **{f"off {n}": ("--batch-wait-ms", "0", "--forward-batch", str(n)) for n in SIZES}}
        procs = {mode: servers.enter_context(serve_process(store.root, device, Path(tmp) / f"{mode}.log", *given))
                 for mode, given in options.items()}
        for _ in range(rounds):
            for key in [(n, clients, mode) for n in SIZES for clients in CLIENTS for mode in ("on", "off")]:
                n, clients, mode = key
                batch = on_batch if mode == "on" else n
                wanted = [(0, n, 1000 + k) for k in range(server_batch(n, clients, batch) if mode == "on" else 1)]
                own.setdefault(key, []).append(measure(wanted, batch, seconds))
                port, pid = procs["on" if mode == "on" else f"off {n}"]
                cpu = cpu_seconds(pid)
                rps, latencies = client_load(port, n, clients, seconds, plan.splits[0])
                images = (len(latencies) + 2 * clients) * n  # with the two warm-up requests of each client
                served.setdefault(key, []).append((rps, latencies, (cpu_seconds(pid) - cpu) / images))
    return _rows(served, own, shape, name)


def _rows(served: dict, own: dict, shape: dict, name: str) -> list[Row]:
    rows = []
    for (n, clients, mode), taken in sorted(served.items(), key=lambda kv: (kv[0][2] == "off", kv[0][:2])):
        rps, latencies, cpu = max(taken, key=lambda t: t[0])
        own_rate, own_cpu = max(own[(n, clients, mode)])
        p50, p99 = (1000 * float(np.percentile(latencies, q)) for q in (50, 99))
        rows.append(Row(figure=f"acgan serve, n={n}, {clients} concurrent client(s), batching {mode}",
                        unit="requests/s", target="-", measured=rps, device=name,
                        note=f"p50 {p50:.0f} ms, p99 {p99:.0f} ms; {rps * n:,.0f} images/s, {1000 * cpu:.2f} ms of "
                             f"the server's CPU per image; the generator drawn alike: {own_rate:,.0f} images/s, "
                             f"{1000 * own_cpu:.2f} ms of CPU per image; {len(latencies)} requests"))
    net = f"{shape['resolution']} px, G at width {shape['width']}"

    def median_ratio(key: tuple) -> float:
        n = key[0]
        return float(np.median([s[0] * n / o[0] for s, o in zip(served[key], own[key])]))

    rate = {key: max(t[0] for t in taken) for key, taken in served.items()}
    rows += [
        ratio_row("served / the generator drawn as the server draws, 16 concurrent n=64 clients, batching on",
                  median_ratio((64, 16, "on")), name, f"images/s, median of the rounds' adjacent windows ({net})"),
        ratio_row("served / the generator drawn as the server draws, 16 concurrent n=1 clients, batching on",
                  median_ratio((1, 16, "on")), name, f"images/s, median of the rounds' adjacent windows ({net})"),
        ratio_row("the generator's CPU per image / the server's, 16 concurrent n=64 clients, batching on",
                  min(o[1] for o in own[(64, 16, "on")]) / min(s[2] for s in served[(64, 16, "on")]), name,
                  "CPU seconds per image from /proc, the least of the rounds each"),
        Row(figure="batching speed-up, 16 concurrent n=1 clients (requests/s, on / off)", unit="x",
            target=">= 4 on a GPU", measured=rate[(1, 16, "on")] / rate[(1, 16, "off")], device=name),
    ]
    return rows
