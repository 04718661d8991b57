"""The evaluation's self-contained HTML report (`eval/report.html`), and its summary flattened to one number per name
for KFP metrics and the printed table."""

from __future__ import annotations

import base64
import html
import math

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


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.3f}" if isinstance(v, float) else html.escape(str(v))


def _img(title: str, png: bytes) -> str:
    return (f"<figure><img alt='{html.escape(title)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
            f"<figcaption>{html.escape(title)}</figcaption></figure>")


def _class_table(per_class: list[dict]) -> str:
    """The per-class table: the accuracy columns where the classifier ran, the MS-SSIM columns where MS-SSIM ran."""
    accuracy, diversity = "accuracy" in per_class[0], "ms_ssim" in per_class[0]
    head = "<th>id</th><th>name</th><th>split</th>" + ("<th>accuracy</th><th>real accuracy</th>" if accuracy else "") \
        + ("<th>MS-SSIM &plusmn; s.e.</th><th>real MS-SSIM &plusmn; s.e.</th><th>low diversity</th>" if diversity else "")
    rows = "".join(
        f"<tr><td>{c['id']}</td><td>{html.escape(c['name'])}</td><td>{c['split']}</td>"
        + (f"<td>{_fmt(c['accuracy'])}</td><td>{_fmt(c['real_accuracy'])}</td>" if accuracy else "")
        + (f"<td>{_fmt(c['ms_ssim'])} &plusmn; {_fmt(c['ms_ssim_se'])}</td>"
           f"<td>{_fmt(c['real_ms_ssim'])} &plusmn; {_fmt(c['real_ms_ssim_se'])}</td>"
           f"<td>{'yes' if c['low_diversity'] else ''}</td>" if diversity else "") + "</tr>" for c in per_class)
    return f"<table><tr>{head}</tr>{rows}</table>"


def render_report(summary: dict, per_class: list[dict], computed_on: dict, pictures: dict[str, bytes],
                  grids: dict[str, bytes], info: ClassifierInfo | None, total_grids: int) -> str:
    """The report of what was computed: sections and columns of analyses not chosen are left out."""
    rows = "".join(f"<tr><td>{k}</td><td>{_fmt(v)}</td></tr>" for k, v in flat_summary(summary).items())
    figs = "".join(_img(key.rsplit("/", 1)[1].removesuffix(".png").replace("-", " "), png)
                   for key, png in pictures.items() if key.startswith("eval/figures/"))
    figs = f"<h2>Figures</h2>{figs}" if figs else ""  # an analysis's figures, where it was chosen
    checks = "".join(_img(key.rsplit("/", 1)[1].removesuffix(".png").replace("-", " "), png)
                     for key, png in pictures.items() if key.startswith("eval/overfitting/"))
    images = "".join(_img(key.rsplit("/", 1)[1].removesuffix(".png"), png) for key, png in grids.items())
    more = f"<p>{total_grids - len(grids)} more split grids are in the store under eval/.</p>" \
        if total_grids > len(grids) else ""
    pairs = f" {computed_on['pairs_per_class']} MS-SSIM pairs per class," if "pairs_per_class" in computed_on else ""
    classifier = f"; classifier: {html.escape(info.describe())}. Inception Score and FID use this classifier as " \
                 f"their feature network: they compare runs evaluated with the same classifier only" if info else ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>acgan-ensemble evaluation</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:2px 8px;text-align:right}}figure{{display:inline-block;margin:0 1em 1em 0}}
img{{image-rendering:pixelated;max-width:min(100%,640px)}}</style></head><body>
<h1>acgan-ensemble evaluation</h1>
<p>{computed_on['samples_per_class']} samples per class through the ensemble,{pairs} {computed_on['real_images']} real
images{classifier}.</p>
<h2>Summary</h2><table>{rows}</table>
{figs}
<h2>Samples (one row per class)</h2>{images}{more}
<h2>Overfitting checks</h2><p>Nearest neighbours: each row is a sample followed by its nearest real images of the
class. Interpolation: one row per class, z moving in a straight line. Fixed z: one row per z, one column per class.</p>
{checks}
<h2>Per class</h2>{_class_table(per_class)}
</body></html>
"""
