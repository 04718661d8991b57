"""`acgan compare`: the class-split study across evaluated stores (paper Figure 10)."""

from __future__ import annotations

import json

from acgan import figures
from acgan.data.plan import load_plan
from acgan.errors import UserError, command
from acgan.layout import METRICS_KEY
from acgan.store import Store

NEEDED = {"discriminability": "accuracy", "diversity": "ms_ssim_mean"}  # the analyses compared, by a key of each


def compare(stores: list[Store]) -> tuple[list[dict], bytes]:
    """The class-split study (paper Figure 10): mean MS-SSIM of each evaluated store against its classes per model."""
    runs = []
    for store in stores:
        if not store.exists(METRICS_KEY):
            raise UserError(f"store {store.uri} has no evaluation ({METRICS_KEY}): run "
                            f"{command('acgan', 'evaluate', '--store', store.uri)} first")
        summary = json.loads(store.read_bytes(METRICS_KEY))["summary"]
        missing = [name for name, key in NEEDED.items() if key not in summary]
        if missing:
            raise UserError(f"store {store.uri}'s evaluation ({METRICS_KEY}) has no {' or '.join(missing)}, which the "
                            f"comparison needs: run "
                            f"{command('acgan', 'evaluate', '--store', store.uri, '--analyses', ','.join(NEEDED))} "
                            "(or with every analysis, the default) first")
        plan = load_plan(store)
        runs.append({"store": store.uri, "classes_per_model": plan.num_classes / len(plan.splits),
                     **{k: summary[k] for k in ("ms_ssim_mean", "ms_ssim_std", "real_ms_ssim_mean", "accuracy")}})
    return runs, figures.ms_ssim_by_classes_per_model(runs)
