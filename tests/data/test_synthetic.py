"""The synthetic source: its classes look distinct and a store prepared from it splits as planned."""

import numpy as np

from acgan.data.plan import load_plan
from acgan.data.prepare import PrepareConfig, prepare
from acgan.data.synthetic import synthetic_source
from acgan.store import LocalStore


def test_synthetic_classes_are_distinct(tmp_path):
    source = synthetic_source(num_classes=60, images_per_class=8, resolution=32, seed=0)
    images = source.load_classes(list(range(60)))
    means = np.stack([images[c].reshape(8, -1).astype(float).mean(0) for c in range(60)])
    within = np.mean([np.abs(images[c][0].astype(float) - images[c][1]).mean() for c in range(60)])
    dists = np.abs(means[:, None] - means[None]).mean(-1)
    np.fill_diagonal(dists, np.inf)
    assert dists.min() > 5, "two synthetic classes look alike on average"
    assert within > 1, "images of one class must vary"
    store = LocalStore(tmp_path)
    plan = prepare(PrepareConfig(dataset="synthetic", num_classes=25, images_per_class=4, classes_per_split=10), store)
    assert [len(s) for s in plan.splits] == [10, 10, 5]
    assert load_plan(store) == plan
