"""The batcher and the generator cache, in process with real generators: an image depends only on its class and
seed, however requests are batched; concurrent requests for a split share forward passes, other splits' do not; the
cache loads a split once, keeps the most recently used and retries a failed one after a while."""

import asyncio

import numpy as np
import pytest
import torch

from acgan.model import Generator, ModelConfig
from acgan.serving import batching
from acgan.serving.batching import Batcher, GeneratorCache, Unavailable, draw


def generator(resolution=32, width=0.125, seed=0) -> Generator:
    torch.manual_seed(seed)
    G = Generator(ModelConfig(resolution=resolution, channels=1, num_classes=5, width=width)).eval()
    with torch.no_grad():  # untrained weights make a flat grey image; these make every pixel depend on z
        for p in G.parameters():
            p.mul_(8)
    return G


@pytest.mark.parametrize("resolution, forward_batch", [(32, 128), (32, 3), (128, 8)])
def test_an_image_depends_only_on_its_class_and_seed(resolution, forward_batch):
    G = generator(resolution, 0.125 if resolution == 32 else 0.0625)
    alone = draw(G, [(1, 3, 7)], forward_batch)
    assert alone.shape == (3, 1, resolution, resolution) and alone.dtype == np.uint8
    assert alone.std() > 10  # varied images: equality below means something
    for others in ([(0, 5, 1)], [(0, 5, 1), (4, 9, 2)], [(1, forward_batch + 1, 3)]):
        batched = draw(G, others[:1] + [(1, 3, 7)] + others[1:], forward_batch)
        start = others[0][1]
        assert np.array_equal(batched[start:start + 3], alone), others
    assert not np.array_equal(draw(G, [(1, 3, 8)], forward_batch), alone)  # another seed, other images
    assert not np.array_equal(draw(G, [(2, 3, 7)], forward_batch), alone)  # another class, other images


def run(coroutine):
    return asyncio.run(coroutine)


def test_concurrent_requests_for_a_split_share_a_batch_and_other_splits_do_not(monkeypatch):
    G0, G1 = generator(seed=0), generator(seed=1)
    batches = []

    def recorded(G, wanted, forward_batch):
        batches.append((G, [n for _, n, _ in wanted]))
        return draw(G, wanted, forward_batch)

    monkeypatch.setattr(batching, "draw", recorded)
    asked = [(0, G0, 1, 2, 11), (1, G1, 0, 3, 12), (0, G0, 2, 1, 13), (0, G0, 1, 4, 11), (1, G1, 4, 2, 14)]

    async def together(wait_s, per_pass=16):
        batcher = Batcher(wait_s, lambda G: per_pass, 100_000)
        return await asyncio.gather(*(batcher.draw(*a) for a in asked))

    answers = run(together(0.05))
    assert batches == [(G0, [2, 1, 4]), (G1, [3, 2])]  # the oldest request's split first, each split in one batch
    for (split, G, local, n, seed), images in zip(asked, answers):
        assert np.array_equal(images, draw(G, [(local, n, seed)], 16))

    batches.clear()
    assert all(np.array_equal(a, b) for a, b in zip(run(together(0)), answers))
    assert [len(n) for _, n in batches] == [1] * len(asked)  # no batching: one request at a time

    batches.clear()
    monkeypatch.setattr(batching, "BATCH_PASSES", 2)
    run(together(0.05, per_pass=2))
    assert batches == [(G0, [2, 1]), (G1, [3]), (G0, [4]), (G1, [2])]  # at most 2 passes a batch, oldest first


def test_the_cache_loads_a_split_once_and_keeps_the_most_recently_used(monkeypatch):
    loads = []

    def load(split):
        loads.append(split)
        if split == 9:
            raise Unavailable("split 9 is damaged")
        return generator(seed=split)

    async def scenario():
        cache = GeneratorCache(load, size=2)
        first = await asyncio.gather(*(cache.get(0) for _ in range(5)))
        assert all(G is first[0] for G in first) and loads == [0]  # one load for five waiting requests
        await cache.get(1)
        await cache.get(0)  # 0 is now the most recently used
        await cache.get(2)  # so 1 is dropped
        assert cache.loaded() == [0, 2] and loads == [0, 1, 2]
        await cache.get(1)
        assert loads == [0, 1, 2, 1]
        for _ in range(2):
            with pytest.raises(Unavailable, match="split 9 is damaged"):
                await cache.get(9)
        assert loads.count(9) == 1  # the failure is remembered, not read again at once
        monkeypatch.setattr(batching, "FAILED_RETRY_SECONDS", 0.0)
        with pytest.raises(Unavailable):
            await cache.get(9)
        assert loads.count(9) == 2  # and tried again once it is old

    run(scenario())
