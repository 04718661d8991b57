"""`acgan serve` as a person starts and stops it: kserve's notices about what this server does not offer stay out of
its output, and a Ctrl-C ends it with a line about serving, not about checkpoints."""

import signal

from tests.serving.conftest import acgan_serve, copy_store


def test_a_ctrl_c_stops_serving_in_its_own_words(ensemble_template, tmp_path):
    store = copy_store(ensemble_template, tmp_path / "store")
    log = tmp_path / "serve.log"
    with acgan_serve(str(store.root), log) as (_, proc):
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 130
    shown = log.read_text()
    assert shown.rstrip().endswith("acgan serve: stopped serving (Ctrl-C)"), shown[-2000:]
    assert "OpenAI endpoints not registered" not in shown and "checkpoints are kept" not in shown
