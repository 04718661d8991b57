"""The ensemble's manifest: one member per class, every class of the run."""

import pytest

from acgan.ensemble import EnsembleManifest


def test_manifest_rejects_duplicate_and_missing_classes():
    member = dict(name="x", split=0, local_index=0, checkpoint="splits/split-00000/checkpoints/step-00000004", step=4)
    with pytest.raises(ValueError, match=r"classes \[1\] appear more than once"):
        EnsembleManifest(resolution=32, channels=1, target_steps=4,
                         classes=[{"class_id": 0, **member}, {"class_id": 1, **member}, {"class_id": 1, **member}])
    with pytest.raises(ValueError, match="missing"):
        EnsembleManifest(resolution=32, channels=1, target_steps=4, classes=[{"class_id": 1, **member}])
