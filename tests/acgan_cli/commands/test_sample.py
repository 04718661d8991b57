"""`acgan sample`'s bad output: one line, exit 2, the store untouched (its end-to-end run: tests/acgan_cli/test_main.py;
--raw: tests/training/test_ema.py)."""

from tests.acgan_cli.test_main import TINY_ARGS, assert_one_line_error, run


def test_sample_bad_output_keeps_store(capsys, tmp_path, digits_store):
    store = str(digits_store.root)
    assert run(capsys, "train-split", "--store", store, "--split", 0, "--steps", 5, *TINY_ARGS)[0] == 0
    before = {k: digits_store.read_bytes(k) for k in digits_store.list("splits/")}
    code, _, err = run(capsys, "sample", "--store", store, "--class", 1, "--out", tmp_path / "x.jpg")
    assert_one_line_error(code, err, "use a .png")
    code, _, err = run(capsys, "sample", "--store", store, "--class", 1, "--out", tmp_path / "no" / "x.png")
    assert_one_line_error(code, err, "does not exist")
    assert {k: digits_store.read_bytes(k) for k in digits_store.list("splits/")} == before
