"""The two pieces beside the predictor: the cache of loaded generators, and the batcher that runs concurrent requests
for one split as one forward pass.

Same seed, same images, whatever else the server is doing: each request's latents come from its own seed (a
torch.Generator of its own, as `acgan sample` draws them) and are concatenated with the others' of the batch, and
every forward pass has the same number of images (`forward_batch`; the last pass of a batch is padded). The padding is
what makes it exact: a linear layer's matrix product is not bit-identical across batch sizes (on this CPU it differs
below 4 rows, and at 128 px that flips a few pixels of 3 million), while at a fixed size each image's result does not
depend on the images beside it (tests/serving/test_batching.py checks both).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from prometheus_client import Histogram

from acgan.model import Generator, to_uint8

log = logging.getLogger(__name__)
GPU_FORWARD_BATCH = 64
# On a CPU an image costs about the same in any pass beyond a few (one thread, the embedded run's G at 32 px: 0.96 ms
# alone, 0.45 ms in a pass of 16, 0.37-0.45 ms in passes of 32-128; the paper's G at 128 px: 56-69 ms at 1-8), so a
# pass of 2**14 output pixels (16 images at 32 px, 1 at 128 px) gains most of it and pads a lone request little.
CPU_PASS_PIXELS = 2**14
BATCH_PASSES = 16  # a batch holds at most this many forward passes of images (or one request, if larger)
FAILED_RETRY_SECONDS = 30.0  # a split that failed to load is not read again for this long (a damaged one is 66 MB)
# On the server's /metrics (Prometheus): how much the batching shares. Every batch size up to 16 requests has its
# own bucket, so that the serving benchmark can replay the batches a server formed (acgan_cli/benchmarks/serve.py).
BATCH_REQUESTS = Histogram("acgan_serve_batch_requests", "requests drawn together in one batch",
                           buckets=(*range(1, 17), 32, 64, 128, 256))
BATCH_IMAGES = Histogram("acgan_serve_batch_images", "images drawn in one batch",
                         buckets=(1, 8, 64, 256, 1024, 4096, 16384))


class Unavailable(Exception):
    """What a request needs cannot be served now (no ensemble, a missing or damaged sub-model): HTTP 503."""

    retry_after: int | None = None  # seconds, for the answer's Retry-After header


class QueueFull(Unavailable):
    """The images already waiting to be drawn are at the server's bound: HTTP 503 with Retry-After."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


def default_forward_batch(device: torch.device, resolution: int) -> int:
    return GPU_FORWARD_BATCH if device.type != "cpu" else max(1, CPU_PASS_PIXELS // resolution**2)


@torch.inference_mode()
def draw(G: Generator, wanted: list[tuple[int, int, int]], forward_batch: int) -> np.ndarray:
    """Images for each (split-local class, n, seed) of `wanted`, concatenated: uint8 (sum of n, C, H, W)."""
    device = next(G.parameters()).device
    z = torch.cat([torch.randn(n, G.cfg.noise_dim, generator=torch.Generator(device).manual_seed(seed), device=device)
                   for _, n, seed in wanted])
    y = torch.cat([torch.full((n,), local, dtype=torch.long, device=device) for local, n, _ in wanted])
    out = []
    for start in range(0, len(z), forward_batch):
        zc, yc = z[start:start + forward_batch], y[start:start + forward_batch]
        real = len(zc)
        if real < forward_batch:  # padded to the one size every pass has
            zc = torch.cat([zc, zc.new_zeros(forward_batch - real, zc.shape[1])])
            yc = torch.cat([yc, yc.new_zeros(forward_batch - real)])
        out.append(to_uint8(G(zc, yc)[:real]))
    return np.concatenate(out)


class GeneratorCache:
    """The generators of the most recently used splits, at most `size`; each is read from the store once (by `load`,
    in a thread of its own) and requests for a split being loaded wait for that one load. A split that fails to load
    fails its requests with the reason for FAILED_RETRY_SECONDS, then is tried again."""

    def __init__(self, load: Callable[[int], Generator], size: int):
        self._load, self.size = load, size
        self._loaded: OrderedDict[int, Generator] = OrderedDict()
        self._loading: dict[int, asyncio.Task] = {}
        self._failed: dict[int, tuple[float, str]] = {}
        self._threads = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="acgan-load")

    def loaded(self) -> list[int]:
        return list(self._loaded)

    async def get(self, split: int) -> Generator:
        if split in self._loaded:
            self._loaded.move_to_end(split)
            return self._loaded[split]
        failed = self._failed.get(split)
        if failed and time.monotonic() - failed[0] < FAILED_RETRY_SECONDS:
            raise Unavailable(failed[1])
        if split not in self._loading:
            self._loading[split] = asyncio.ensure_future(self._load_into_cache(split))
        return await asyncio.shield(self._loading[split])  # a client that goes away does not cancel the load

    async def _load_into_cache(self, split: int) -> Generator:
        try:
            G = await asyncio.get_running_loop().run_in_executor(self._threads, self._load, split)
        except Unavailable as e:
            self._failed[split] = (time.monotonic(), str(e))
            log.warning("%s", e)
            raise
        finally:
            del self._loading[split]
        self._failed.pop(split, None)
        self._loaded[split] = G
        while len(self._loaded) > self.size:
            dropped, _ = self._loaded.popitem(last=False)
            log.info("dropped split %d's generator (--max-loaded %d)", dropped, self.size)
        return G


@dataclass
class _Request:
    split: int
    G: Generator
    local_index: int
    n: int
    seed: int
    arrived: float
    done: asyncio.Future = field(repr=False)


class Batcher:
    """One queue per server: the oldest request waits up to `wait_s` for others of its split (less if a forward
    pass is already full), then they are drawn together in one thread (at most BATCH_PASSES passes), one batch at a
    time. Requests that arrive while a batch runs make the next one. `wait_s` 0: each request is drawn alone.
    A request cancelled while it waits (its client went away) leaves the queue and is never drawn; one that would
    take the images waiting or being drawn beyond `max_queued` is refused (QueueFull), unless nothing waits."""

    def __init__(self, wait_s: float, forward_batch: Callable[[Generator], int], max_queued: int):
        self.wait_s, self.forward_batch, self.max_queued = wait_s, forward_batch, max_queued
        self._queue: list[_Request] = []
        self._drawing = 0  # images of the batch being drawn
        self._seconds_per_image = 0.0  # of the last batch, for Retry-After
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="acgan-forward")

    async def draw(self, split: int, G: Generator, local_index: int, n: int, seed: int) -> np.ndarray:
        loop = asyncio.get_running_loop()
        if self._worker is None:
            self._wakeup = asyncio.Event()
            self._worker = loop.create_task(self._run())
        held = self._drawing + sum(r.n for r in self._queue)
        if held and held + n > self.max_queued:
            wait = max(1, math.ceil(held * self._seconds_per_image))
            raise QueueFull(f"the server holds {held} images to draw and takes at most {self.max_queued} "
                            f"(--max-queued-images): retry in {wait} s, or ask for fewer", wait)
        request = _Request(split, G, local_index, n, seed, time.monotonic(), loop.create_future())
        self._queue.append(request)
        self._wakeup.set()
        try:
            return await request.done
        except asyncio.CancelledError:
            if request in self._queue:
                self._queue.remove(request)
            raise

    def _next_batch(self) -> list[_Request] | None:
        """The oldest request and the others of its split, up to BATCH_PASSES passes; None while it should wait."""
        first = self._queue[0]
        if self.wait_s == 0:
            return [self._queue.pop(0)]
        same = [r for r in self._queue if r.split == first.split]
        per_pass = self.forward_batch(first.G)
        if sum(r.n for r in same) < per_pass and time.monotonic() - first.arrived < self.wait_s:
            return None
        batch, images = [], 0
        for r in same:
            if batch and images + r.n > BATCH_PASSES * per_pass:
                break
            batch.append(r)
            images += r.n
        self._queue = [r for r in self._queue if r not in batch]
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch = self._next_batch()
                if batch is None:
                    await asyncio.sleep(max(0.0, self._queue[0].arrived + self.wait_s - time.monotonic()))
                    continue
                batch = [r for r in batch if not r.done.cancelled()]  # the client went away while it waited
                if not batch:
                    continue
                G = batch[0].G
                wanted = [(r.local_index, r.n, r.seed) for r in batch]
                self._drawing, began = sum(r.n for r in batch), time.monotonic()
                try:
                    images = await loop.run_in_executor(self._thread, draw, G, wanted, self.forward_batch(G))
                except Exception as e:  # noqa: BLE001 - every request of the batch gets the failure
                    log.exception("drawing a batch of split %d failed", batch[0].split)
                    for r in batch:
                        if not r.done.done():
                            r.done.set_exception(e)
                    continue
                finally:
                    self._drawing = 0
                self._seconds_per_image = (time.monotonic() - began) / len(images)
                BATCH_REQUESTS.observe(len(batch))
                BATCH_IMAGES.observe(len(images))
                start = 0
                for r in batch:
                    if not r.done.done():
                        r.done.set_result(images[start:start + r.n])
                    start += r.n
