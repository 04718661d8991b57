"""`acgan compare`: the class-split study across evaluated stores."""

import pytest

from acgan.ensemble import assemble_ensemble
from acgan.errors import UserError
from acgan.evaluation.analyses import evaluate
from acgan.evaluation.comparison import compare
from acgan.settings import EvalSettings
from acgan.training.loop import train_split
from tests.conftest import tiny_config


def test_compare_plots_ms_ssim_against_classes_per_model(trained_store, tmp_path):
    from acgan.data.prepare import PrepareConfig, prepare
    from acgan.store import LocalStore

    one_split = LocalStore(tmp_path / "ten-per-model")
    prepare(PrepareConfig(dataset="digits", resolution=32, classes_per_split=10), one_split)
    train_split(one_split, tiny_config(split=0, steps=5))
    assemble_ensemble(one_split, 5)
    settings = EvalSettings(samples_per_class=4, pairs=3, classifier_steps=5, overfitting_classes=1, is_splits=2)
    with pytest.raises(UserError, match="has no evaluation"):
        compare([trained_store, one_split])
    for store in (trained_store, one_split):
        evaluate(store, settings)
    runs, png = compare([trained_store, one_split])
    assert [r["classes_per_model"] for r in runs] == [5.0, 10.0]
    assert png.startswith(b"\x89PNG")
