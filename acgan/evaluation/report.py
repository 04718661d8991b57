"""The evaluation's self-contained HTML report (`eval/report.html`), and its summary flattened to one number per name
for KFP metrics and the printed table."""

from __future__ import annotations

import base64
import math
from importlib import resources

import jinja2

from acgan.layout import FIGURES_PREFIX, OVERFITTING_PREFIX, SAMPLE_GRID_PREFIX
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


def plain_summary(metrics: dict, named: int) -> list[str]:
    """The evaluation in a few plain sentences (`acgan run`'s closing summary and the report's opening): the parts
    of it that the analyses chosen computed (overall accuracy: discriminability; overall MS-SSIM: diversity; per
    class, the accuracy where the classifier ran and the MS-SSIM where MS-SSIM ran); at most `named` classes are
    named in a sentence."""
    s, classes = metrics["summary"], metrics["classes"]
    lines, flagged = [], []
    if "accuracy" in s:
        lines.append(f"{s['accuracy']:.1%} of samples are recognised as their class by a classifier trained on the "
                     f"real images (real images: {s['real_accuracy']:.1%}).")
    if "ms_ssim_mean" in s:
        lines.append(f"Diversity (mean MS-SSIM of same-class pairs, lower is more varied): samples "
                     f"{s['ms_ssim_mean']:.2f}, real images {s['real_ms_ssim_mean']:.2f}; "
                     f"{s['fraction_below_real_max']:.0%} of classes are below the least diverse real class "
                     f"({s['real_ms_ssim_max']:.2f}).")
        low = [c["name"] for c in classes if c["low_diversity"]]
        threshold = metrics["computed_on"]["collapse_threshold"]
        flagged.append(f"Flagged as collapsing (samples' MS-SSIM at or above {threshold:.2f}, the collapse alarm's "
                       f"line): {_some(low, classes, named)}.")
    if "accuracy" in classes[0]:
        weak = [c["name"] for c in classes if c["accuracy"] < 0.9]
        flagged.append(f"Recognised under 90%: {_some(weak, classes, named)}.")
    lines.append(" ".join(flagged))
    return lines


def _some(names: list[str], classes: list[dict], named: int) -> str:
    """Class names for a sentence: all of a few, else how many and the first ones."""
    if not names:
        return "none"
    if len(names) <= named:
        return ", ".join(names)
    return f"{len(names)} of {len(classes)} classes, {', '.join(names[:named])} …"


def _number(v) -> str:
    """A figure of the report: three decimals, "n/a" where there is none."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


# Each picture's title, the line that names it at the top, and its caption, by its file name's stem (a trailing
# -NNNNN: a split's).
PICTURES = {
    "accuracy-by-resolution": (
        "Discriminability by resolution",
        "Do samples use their full resolution? The classifier's accuracy as images are made smaller.",
        "The classifier's accuracy on the samples and on real images, each image shrunk to the size on the axis and "
        "enlarged back. Samples that lose accuracy as their size falls carry detail that a smaller image cannot "
        "(Odena et al. 2016, section 4.1)."),
    "ms-ssim-samples-vs-real": (
        "Diversity of samples against real images",
        "Is each class as varied as its data? Sample pairs' MS-SSIM against real pairs'.",
        "Each point is a class: the mean MS-SSIM of pairs of its samples against that of pairs of its real images "
        "(higher: more alike). Points above the grey diagonal are classes less varied than their data; at or above "
        "the red line a class is collapsing (section 4.2)."),
    "accuracy-vs-ms-ssim": (
        "Accuracy against diversity",
        "Do varied classes also look right? Each class's accuracy against its samples' MS-SSIM.",
        "Each point is a class: the fraction of its samples recognised against their mean MS-SSIM. The red line "
        "marks collapsing classes, the grey one the accuracy under which a class counts as unrecognised; the title "
        "gives their correlation (section 4.3)."),
    "ms-ssim-over-training": (
        "Diversity during training",
        "Did a class collapse while it trained? Its samples' MS-SSIM at each training tick.",
        "Each line is a class: the mean MS-SSIM of fixed samples at each tick of its split's training. A line that "
        "rises to the red line is a class collapsing (the collapse alarm of `acgan status`)."),
    "samples-split": (
        "Samples of split {split}",
        "What the generators draw: one row per class of a split.",
        "One row per class of split {split}, drawn by the split's generator from random noise{enlarged}."),
    "nearest-l1": (
        "Nearest real images, in pixels",
        "Did the generator copy its training images? Each sample beside the real images closest to it.",
        "Each row: a sample, then the real images of its class closest to it in L1 distance{enlarged}. A sample "
        "identical to one of them would be a training image remembered (section 4.5)."),
    "nearest-ms-ssim": (
        "Nearest real images, in structure",
        "The same check with MS-SSIM as the distance.",
        "Each row: a sample, then the real images of its class most like it by MS-SSIM{enlarged}."),
    "interpolation": (
        "Latent interpolation",
        "Does the generator move smoothly between its samples? Noise moved along a line.",
        "One row per class: the noise moved in a straight line between two draws{enlarged}. Gradual change, not "
        "jumps between a few images, shows the generator does not only recall examples (section 4.5)."),
    "fixed-z-split": (
        "Fixed noise across the classes of split {split}",
        "Is style shared across classes? One noise drawn as every class.",
        "One row per noise vector, one column per class of split {split}{enlarged}: what the noise alone sets."),
}
SAMPLE_PIXELS = 96  # grids are enlarged (nearest-neighbour) until a sample is at least this wide on the page


def _pictures(pictures: dict[str, bytes], folder: str, kind: str, scale: int, first: int) -> list[dict]:
    """The pictures under `folder`, numbered from `first`, each with its title, its line, its caption and (a grid)
    its width on the page, enlarged `scale` times."""
    out = []
    for key, png in pictures.items():
        if not key.startswith(folder):
            continue
        stem = key.rsplit("/", 1)[1].removesuffix(".png")
        base, _, split = stem.rpartition("-") if stem[-5:].isdigit() else (stem, "", "")
        title, line, caption = PICTURES.get(base, (stem.replace("-", " "), "", ""))
        words = {"split": int(split) if split else "", "enlarged": f", enlarged {scale} times" if scale > 1 else ""}
        width = int.from_bytes(png[16:20], "big") * scale if kind == "grid" else None  # the PNG's IHDR width
        out.append({"anchor": stem, "kind": kind, "png": png, "width": width, "number": first + len(out),
                    "title": title.format(**words), "line": line, "caption": caption.format(**words)})
    return out


_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True)
_ENV.filters.update(number=_number, base64=lambda png: base64.b64encode(png).decode())
_REPORT = _ENV.from_string(resources.files("acgan.evaluation").joinpath("report.html").read_text())


def render_report(summary: dict, per_class: list[dict], computed_on: dict, pictures: dict[str, bytes],
                  grids: dict[str, bytes], info: ClassifierInfo | None, total_grids: int, resolution: int) -> str:
    """The report of what was computed (report.html, a jinja2 template with autoescape), as a paper's figure page
    opens: the summary in words, what each figure shows, the per-class table; then the figures, captioned; the sample
    grids and overfitting checks enlarged until a sample is SAMPLE_PIXELS wide; every figure by its metrics name last.
    Sections and columns of analyses not chosen are left out: the accuracy columns where the classifier ran, the
    MS-SSIM ones where MS-SSIM ran, the feature metrics' and CAS's where they ran (with their definitions)."""
    scale = max(1, math.ceil(SAMPLE_PIXELS / resolution))
    charts = _pictures(pictures, FIGURES_PREFIX, "chart", 1, 1)
    samples = _pictures(grids, SAMPLE_GRID_PREFIX, "grid", scale, 1 + len(charts))
    checks = _pictures(pictures, OVERFITTING_PREFIX, "grid", scale, 1 + len(charts) + len(samples))
    metrics = {"summary": summary, "classes": per_class, "computed_on": computed_on}
    return _REPORT.render(summary=flat_summary(summary), per_class=per_class, computed_on=computed_on, info=info,
                          sentences=plain_summary(metrics, 10), figures=charts, grids=samples, checks=checks,
                          more_grids=total_grids - len(grids), accuracy="accuracy" in per_class[0],
                          diversity="ms_ssim" in per_class[0], features="recall" in per_class[0],
                          cas="cas" in per_class[0]) + "\n"
