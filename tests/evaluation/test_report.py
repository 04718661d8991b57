"""The evaluation's report (acgan/evaluation/report.py, report.html) as a person reads it in a browser: headless
Chromium lays out a real evaluation's report, and the page opens as a paper's figure page does."""

import json

from acgan.evaluation.analyses import evaluate
from tests.serving.chromium import chromium
from tests.test_evaluation import STREAM_SETTINGS, _synthetic_ensemble

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
    store = _synthetic_ensemble(tmp_path / "store", 4)
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
