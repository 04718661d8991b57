"""Named presets: plain data, the values a preset gives the settings it names; the rest keep their field's default
(acgan/settings.py). A flag, a KFP parameter or a keyword given explicitly overrides the preset's value."""

from __future__ import annotations

from pydantic import BaseModel

PRESETS: dict[str, dict] = {
    # Odena, Olah & Shlens (2016) at ImageNet's shape: their networks, objective, dropout and noise, nothing added.
    "paper": {"resolution": 128, "classes_per_split": 10, "steps": 50_000, "batch_size": 100, "width": 1.0,
              "d_width": 1.0, "d_dropout": 0.5, "d_noise_std": 0.1, "d_fake_class_loss": True, "mode_seeking": 0.0,
              "augment": "", "g_layout": "paper", "ema_kimg": 0.0, "objective": "acgan"},
    # The embedded digits run, tuned for quality within 10 minutes on 2 CPU cores (docs/experiments.md, "The
    # embedded run").
    "demo": {"dataset": "digits", "resolution": 32, "classes_per_split": 5, "steps": 900, "batch_size": 64,
             "checkpoint_every": 300, "width": 0.125, "d_width": 0.5, "d_dropout": 0.25, "d_noise_std": 0.0,
             "d_fake_class_loss": False, "mode_seeking": 0.2, "augment": "", "g_layout": "imagenet-start",
             "objective": "acgan"},
}


def preset_defaults(model: type[BaseModel], preset: str | None) -> dict:
    """The value each optional field of `model` takes under `preset`, before anything is given: what the compiled
    pipeline shows as its parameters' defaults."""
    defaults = {name: field.get_default(call_default_factory=True) for name, field in model.model_fields.items()
                if not field.is_required()}
    return {**defaults, **{k: v for k, v in PRESETS.get(preset or "", {}).items() if k in defaults},
            "preset": preset}

