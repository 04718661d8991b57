"""`acgan bench --only serve`: what `acgan serve` delivers, beside the generator's own throughput in the same run.

A real server process on loopback and real HTTP clients (threads, one keep-alive connection each, the images in the
protocol's binary form so that the clients' decoding stays small beside the server's work), for n=1 and n=64 images
a request at 1 and 16 concurrent clients, with batching on (the server's defaults) and off (`--batch-wait-ms 0` and
forward passes of exactly the request's n: one plain forward pass per request, as a server without batching runs).
Every request asks for a class of the same split, the case batching is for. The generator's own throughput is plain
forward passes (and the conversion to uint8) at batch 1 and 64 in this process. Each figure is the best of a few
rounds, taken in turn. On a CPU the ensemble has the embedded run's shape (32 px, G at width 0.125 from the ImageNet
G's 8x8 start), on a GPU the paper's (128 px, full width); its weights are untrained, which costs the same.
"""

from __future__ import annotations

import contextlib
import http.client
import json
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
from acgan.model import to_uint8
from acgan.process import stop_process
from acgan.sampling import generator_from_files
from acgan.store import LocalStore
from acgan.training.state import GENERATOR_FILE, META_FILE
from acgan_cli.benchmarks.suite import Row, device_name, untrained_ensemble

MODEL = "acgan-ensemble"
SIZES = (1, 64)
CLIENTS = (1, 16)
SERVING = re.compile(r"inference POST http://127\.0\.0\.1:(\d+)/v2/models/")


@contextlib.contextmanager
def serve_process(store: Path, device: torch.device, log: Path, *options: str):
    """`acgan serve` on a free loopback port; yields the port."""
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
        yield int(found.group(1))
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


@torch.inference_mode()
def generator_images_per_second(G, batch: int, seconds: float) -> float:
    """Plain forward passes of `batch` images and their conversion to uint8, as many as fit in `seconds`."""
    device = next(G.parameters()).device
    z = torch.randn(batch, G.cfg.noise_dim, device=device)
    y = torch.zeros(batch, dtype=torch.long, device=device)
    to_uint8(G(z, y))
    done, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        to_uint8(G(z, y))  # copies to the host, which waits for the GPU
        done += batch
    return done / (time.perf_counter() - began)


def bench_serve(device: torch.device, seconds: float | None = None, rounds: int = 3) -> list[Row]:
    """Every figure is the best of `rounds` measurements of `seconds` each, taken in turn (all servers up at once,
    the generator's own figure for n measured just before the served ones for n), so that a machine whose load
    changes over the run slows the figures compared alike."""
    gpu = device.type == "cuda"
    seconds = seconds or (2.0 if gpu else 1.5)
    shape = dict(resolution=128, width=1.0, classes_per_split=10) if gpu else \
        dict(resolution=32, width=0.125, classes_per_split=5, g_layout="imagenet-start")
    name = device_name(device)
    best: dict[tuple[int, int, str], tuple[float, list[float]]] = {}
    own = dict.fromkeys(SIZES, 0.0)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as servers:
        store = LocalStore(Path(tmp) / "store")
        plan = untrained_ensemble(store, 2 * shape["classes_per_split"], **shape)
        G = generator_from_files(load_checkpoint(store, 0, 1, [GENERATOR_FILE, META_FILE]), device)[0]
        options = {"on": (), **{f"off {n}": ("--batch-wait-ms", "0", "--forward-batch", str(n)) for n in SIZES}}
        ports = {mode: servers.enter_context(serve_process(store.root, device, Path(tmp) / f"{mode}.log", *given))
                 for mode, given in options.items()}
        for _ in range(rounds):
            for n in SIZES:
                own[n] = max(own[n], generator_images_per_second(G, n, seconds / 2))  # beside the served figures
                for clients in CLIENTS:
                    for mode in ("on", "off"):
                        port = ports["on" if mode == "on" else f"off {n}"]
                        measured = client_load(port, n, clients, seconds, plan.splits[0])
                        if measured[0] > best.get((n, clients, mode), (0.0, []))[0]:
                            best[(n, clients, mode)] = measured
    rows = []
    for (n, clients, mode), (rps, latencies) in sorted(best.items(), key=lambda kv: (kv[0][2] == "off", kv[0][:2])):
        p50, p99 = (1000 * float(np.percentile(latencies, q)) for q in (50, 99))
        rows.append(Row(figure=f"acgan serve, n={n}, {clients} concurrent client(s), batching {mode}",
                        unit="requests/s", target="-", measured=rps, device=name,
                        note=f"p50 {p50:.0f} ms, p99 {p99:.0f} ms; {rps * n:,.0f} images/s; {len(latencies)} requests"))
    net = f"{shape['resolution']} px, G at width {shape['width']}"
    rows += [Row(figure=f"generator alone, plain forward passes of {b} ({net})", unit="images/s", target="-",
                 measured=own[b], device=name) for b in SIZES]
    rate = {key: value[0] for key, value in best.items()}
    rows += [
        Row(figure="served / the generator's own images per second, 16 concurrent n=64 clients", unit="x",
            target=">= 0.7", measured=rate[(64, 16, "on")] * 64 / own[64], device=name,
            note="batching on, against plain forward passes of 64"),
        Row(figure="batching speed-up, 16 concurrent n=1 clients (requests/s, on / off)", unit="x",
            target=">= 4 on a GPU", measured=rate[(1, 16, "on")] / rate[(1, 16, "off")], device=name,
            note=f"on / the generator's own forward passes of 1 per second: {rate[(1, 16, 'on')] / own[1]:.2f}x"),
    ]
    return rows
