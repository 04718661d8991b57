"""The evaluation's self-contained HTML report (`eval/report.html`), and its summary flattened to one number per name
for KFP metrics and the printed table."""

from __future__ import annotations

import base64
import math
from importlib import resources

import jinja2

from acgan.metrics.classifier import ClassifierInfo


def flat_summary(summary: dict) -> dict[str, float | None]:
    """One number per name (per-resolution figures become `<name>_<size>px`): KFP metrics and the printed table."""
    flat = {}
    for name, value in summary.items():
        if isinstance(value, dict):
            flat.update({f"{name}_{size}px": v for size, v in value.items()})
        else:
            flat[name] = value
    return flat


def _number(v) -> str:
    """A figure of the report: three decimals, "n/a" where there is none."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _titled(pictures: dict[str, bytes], folder: str, spaces: bool = True) -> list[tuple[str, bytes]]:
    """(title, PNG) of each picture under `folder`: its file name, with `-` read as a space unless `spaces` is off."""
    titled = []
    for key, png in pictures.items():
        if key.startswith(folder):
            name = key.rsplit("/", 1)[1].removesuffix(".png")
            titled.append((name.replace("-", " ") if spaces else name, png))
    return titled


_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True)
_ENV.filters.update(number=_number, base64=lambda png: base64.b64encode(png).decode())
_REPORT = _ENV.from_string(resources.files("acgan.evaluation").joinpath("report.html").read_text())


def render_report(summary: dict, per_class: list[dict], computed_on: dict, pictures: dict[str, bytes],
                  grids: dict[str, bytes], info: ClassifierInfo | None, total_grids: int) -> str:
    """The report of what was computed (report.html, a jinja2 template with autoescape): sections and columns of
    analyses not chosen are left out: the accuracy columns where the classifier ran, the MS-SSIM ones where MS-SSIM
    ran, the feature metrics' and CAS's where they ran (with their definitions)."""
    return _REPORT.render(summary=flat_summary(summary), per_class=per_class, computed_on=computed_on, info=info,
                          figures=_titled(pictures, "eval/figures/"), checks=_titled(pictures, "eval/overfitting/"),
                          grids=_titled(grids, "eval/samples-", spaces=False), more_grids=total_grids - len(grids),
                          accuracy="accuracy" in per_class[0], diversity="ms_ssim" in per_class[0],
                          features="recall" in per_class[0], cas="cas" in per_class[0]) + "\n"
