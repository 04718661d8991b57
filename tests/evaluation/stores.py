"""Stores the evaluation tests evaluate: a synthetic ensemble of a few classes (or its data only), its real images at
once, the settings of a small streamed evaluation; and a count of the images a loader returned that are still
alive."""

import torch

from acgan.ensemble import assemble_ensemble
from acgan.settings import EvalSettings
from acgan.training.loop import train_split
from tests.conftest import tiny_config


def load_real(store, plan, per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every split's real images at once, in RAM (what the evaluation held before it streamed): the reference."""
    from acgan.evaluation.inputs import real_by_split

    images, labels = zip(*real_by_split(store, plan, per_class, seed, torch.device("cpu")))
    return torch.cat(images), torch.cat(labels)


def synthetic_ensemble(root, num_classes: int, classifier: bool = True):
    """A synthetic 32 px store of `num_classes` classes in splits of 2, each split trained one step and assembled,
    with a store classifier trained beforehand (so an evaluation streams from its start) unless not `classifier`."""
    from acgan.data.prepare import PrepareConfig, prepare
    from acgan.metrics.classifier import save_classifier, train_classifier
    from acgan.store import LocalStore

    store = LocalStore(root)
    plan = prepare(PrepareConfig(dataset="synthetic", num_classes=num_classes, images_per_class=10, resolution=32,
                                 classes_per_split=2), store)
    for split in range(len(plan.splits)):
        train_split(store, tiny_config(split=split, steps=1, checkpoint_every=1, tick_every=1))
    assemble_ensemble(store, 1)
    if not classifier:
        return store
    real, labels = load_real(store, plan, 6, 0)
    model, info = train_classifier(real, labels, num_classes, steps=2)
    save_classifier(store, model, info)
    return store


def prepared(root, num_classes: int):
    """A synthetic 32 px store of `num_classes` classes (10 images each) in splits of 2: data only, no classifier."""
    from acgan.data.prepare import PrepareConfig, prepare
    from acgan.store import LocalStore

    store = LocalStore(root)
    plan = prepare(PrepareConfig(dataset="synthetic", num_classes=num_classes, images_per_class=10, resolution=32,
                                 classes_per_split=2), store)
    return store, plan


STREAM_SETTINGS = EvalSettings(samples_per_class=4, pairs=3, real_per_class=6, overfitting_classes=1, is_splits=2,
                               neighbours=2, device="cpu", cas_steps=2)


def count_resident(monkeypatch, name: str) -> dict[str, int]:
    """Wraps <name> (a loader returning (images, labels)) where the evaluation calls it: counts the images it returned
    that are still alive (freed tensors are finalised at once), and the most alive at one time."""
    import weakref

    from acgan.evaluation import inputs, stream

    evaluation = inputs if name == "real_of_split" else stream  # real_by_split calls it; the stream split_samples

    count = {"now": 0, "peak": 0, "calls": 0}
    loader = getattr(evaluation, name)

    def freed(n):
        count["now"] -= n

    def counted(*args, **kwargs):
        images, labels = loader(*args, **kwargs)
        count["now"] += len(images)
        count["calls"] += 1
        count["peak"] = max(count["peak"], count["now"])
        weakref.finalize(images, freed, len(images))
        return images, labels

    monkeypatch.setattr(evaluation, name, counted)
    return count
