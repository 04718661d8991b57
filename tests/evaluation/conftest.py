"""Fixtures of the evaluation tests: a tiny digits store of two trained splits, assembled."""

import pytest

from acgan.ensemble import assemble_ensemble
from acgan.training.loop import train_split
from tests.conftest import tiny_config


@pytest.fixture
def trained_store(digits_store):
    for split in (0, 1):
        train_split(digits_store, tiny_config(split=split, steps=5))
    assemble_ensemble(digits_store, 5)
    return digits_store
