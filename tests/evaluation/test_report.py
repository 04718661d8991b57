"""The evaluation's report (acgan/evaluation/report.py, report.html) as a person reads it in a browser: headless
Chromium lays out a real evaluation's report, and the page opens as a paper's figure page does."""

import json

from acgan.evaluation.analyses import evaluate
from tests.serving.chromium import chromium
from tests.evaluation.stores import STREAM_SETTINGS, synthetic_ensemble

# Where each part of the page is drawn, top to bottom, and what it says.
LAYOUT = """(() => {
  const top = el => el.getBoundingClientRect().top + window.scrollY;
  const grids = [...document.querySelectorAll('#samples img, #overfitting img')];
  return {
    summary: top(document.querySelector('#summary')),
    sentences: [...document.querySelectorAll('#summary p')].map(p => p.textContent),
    listed: [...document.querySelectorAll('#summary dt')].map(d => d.textContent),
    table: top(document.querySelector('#per-class table')),
    flags: (() => {
      const rows = [...document.querySelectorAll('#per-class tr')];
      const column = [...rows[0].children].findIndex(cell => cell.textContent === 'collapsing');
      return rows.map(r => r.children[column].textContent);
    })(),
    captions: [...document.querySelectorAll('#figures figcaption')].map(c => [top(c), c.textContent]),
    overfitting: top(document.querySelector('#overfitting img')),
    grids: grids.map(i => [i.complete && i.naturalWidth, i.getBoundingClientRect().width]),
    names: top(document.querySelector('#metrics')),
  };
})()"""


def test_the_report_opens_with_its_summary_captions_and_table_before_the_grids(tmp_path):
    store = synthetic_ensemble(tmp_path / "store", 4)
    evaluate(store, STREAM_SETTINGS)
    metrics = json.loads(store.read_bytes("eval/metrics.json"))
    with chromium(tmp_path / "profile") as page:
        page.call("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False)
        page.call("Page.navigate", url=(store.root / "eval" / "report.html").as_uri())
        page.wait_for("document.readyState === 'complete'")
        seen = page.evaluate(LAYOUT)
        assert page.errors() == []
    # The summary in words first, then the per-class table, then the captioned figures, then the grids.
    assert seen["summary"] < seen["table"] < min(top for top, _ in seen["captions"]) < seen["overfitting"]
    assert seen["sentences"][0].startswith(f"{metrics['summary']['accuracy']:.1%} of samples are recognised")
    assert any(s.startswith("Flagged as collapsing") for s in seen["sentences"])
    assert seen["listed"][:2] == ["Figure 1: Discriminability by resolution",
                                  "Figure 2: Diversity of samples against real images"]
    # Captioned as a paper's figures: numbered, titled, and what to read in them; not file names.
    assert [text.split(".")[0] for _, text in seen["captions"]] == [f"Figure {n}" for n in range(1, 5)]
    assert all(len(text) > 120 and "ms ssim" not in text for _, text in seen["captions"])
    # One name for a collapsing class: the table's column says what the console and `acgan status` say.
    assert seen["flags"][0] == "collapsing"
    assert [flag == "collapsing" for flag in seen["flags"][1:]] == [c["low_diversity"] for c in metrics["classes"]]
    # 32 px samples enlarged three times, nearest-neighbour, so that a digit can be judged.
    assert seen["grids"] and all(natural and shown == 3 * natural for natural, shown in seen["grids"])
    assert seen["overfitting"] < seen["names"]  # the raw metric names last


def test_the_closing_summary_of_a_thousand_classes_stays_short():
    """A 1000-class run's summary named every class twice and tabulated all 1000: it names ten and tabulates twenty."""
    from pipelines.console import summary_text

    classes = [{"id": i, "name": f"n{i:08d}", "accuracy": 0.0, "ms_ssim": 0.99, "ms_ssim_se": 0.0,
                "real_ms_ssim": 0.25, "real_ms_ssim_se": 0.03, "low_diversity": True} for i in range(1000)]
    summary = {"accuracy": 0.001, "real_accuracy": 0.83, "ms_ssim_mean": 0.99, "real_ms_ssim_mean": 0.27,
               "fraction_below_real_max": 0.0, "real_ms_ssim_max": 0.40}
    on = {"collapse_threshold": 0.40}
    text = summary_text({"summary": summary, "classes": classes, "computed_on": on}, "REPORT", "GRIDS", None)
    assert ("Flagged as collapsing (samples' MS-SSIM at or above 0.40, the collapse alarm's line): 1000 of 1000 "
            "classes, n00000000, ") in text
    assert "n00000009 …. Recognised under 90%: 1000 of 1000 classes" in text and "n00000010" not in text.split("\n")[2]
    rows = [line for line in text.splitlines() if line.startswith("n0")]
    assert len(rows) == 20 and "… 980 more classes: every class is in the report" in text
    few = summary_text({"summary": summary, "classes": classes[:3], "computed_on": on}, "REPORT", "GRIDS", None)
    assert "n00000000, n00000001, n00000002." in few and "more classes" not in few


def test_the_report_escapes_what_it_did_not_write():
    """A class name is a folder name a user chose and a classifier's source a path they gave: the report shows them
    as text (jinja2's autoescape), never as markup."""
    from html.parser import HTMLParser

    from acgan.evaluation.report import render_report
    from acgan.metrics.classifier import ClassifierInfo

    name, source = "<img src=x onerror=alert(1)>", "/data/<script>x</script>.safetensors"
    info = ClassifierInfo(kind="file", source=source, channels=1, resolution=32, num_classes=1, heldout_images=2,
                          heldout_accuracy=0.5)
    per_class = [{"id": 0, "name": name, "split": 0, "accuracy": 0.5, "real_accuracy": 1.0}]
    page = render_report({"accuracy": 0.5, "real_accuracy": 1.0, "fid": float("nan")}, per_class,
                         {"samples_per_class": 2, "real_images": 2}, {}, {"eval/samples-split-00000.png": b"\x89PNG"},
                         info, 1, 32)

    class Tags(HTMLParser):
        tags, text = [], []

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)

        def handle_data(self, data):
            self.text.append(data)

    parsed = Tags(convert_charrefs=True)
    parsed.feed(page)
    assert "script" not in parsed.tags and parsed.tags.count("img") == 1  # the grid's only
    assert name in parsed.text and any(source in t for t in parsed.text) and "n/a" in parsed.text
