"""The three user commands end to end (local and S3 stores), and every bad input: one line, exit 2, nothing lost.
Each command's own cases are beside it, in tests/acgan_cli/commands/."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from acgan.checkpoint import complete_steps
from acgan_cli.main import main
from acgan.store import open_store

IMAGE = ("--image", "registry.example.com/acgan-ensemble:1")  # compile needs one: none is published

TINY_ARGS = ["--batch-size", "16", "--width", "0.0625", "--d-width", "0.25", "--tick-every", "5"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    assert code == 2
    lines = [line for line in err.splitlines() if " ERROR " in line or "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    for f in fragments:
        assert f in lines[0], (f, lines[0])


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_prepare_train_sample(capsys, tmp_path, request, backend):
    uri = str(tmp_path / "store") if backend == "local" else request.getfixturevalue("s3_env")
    assert run(capsys, "prepare", "--store", uri, "--dataset", "digits", "--resolution", 32,
               "--classes-per-split", 5)[0] == 0
    assert run(capsys, "train-split", "--store", uri, "--split", 1, "--steps", 10, "--checkpoint-every", 5,
               *TINY_ARGS)[0] == 0
    code, out, _ = run(capsys, "train-split", "--store", uri, "--split", 1, "--steps", 15, "--checkpoint-every", 5,
                       *TINY_ARGS)
    assert code == 0 and json.loads(out)["resumed_from"] == 10
    assert complete_steps(open_store(uri), 1) == [10, 15]

    png, npz, npz_again = tmp_path / "seven.png", tmp_path / "seven.npz", tmp_path / "again.npz"
    code, out, _ = run(capsys, "sample", "--store", uri, "--class", 7, "-n", 6, "--out", png)
    # A sentence, not JSON.
    assert code == 0 and out == (f"6 samples of class 7 (7) written to {png}: split 1's sampling snapshot at step 15, "
                                 "through the latest checkpoint\n")
    assert Image.open(png).size == (3 * 34 + 2, 2 * 34 + 2)  # 3 x 2 grid of 32px images, 2px gaps
    for out_file in (npz, npz_again):
        assert run(capsys, "sample", "--store", uri, "--class", 7, "-n", 6, "--seed", 3, "--out", out_file)[0] == 0
    a, b = np.load(npz), np.load(npz_again)
    assert a["images"].shape == (6, 32, 32, 1) and a["images"].dtype == np.uint8
    assert a["labels"].tolist() == [7] * 6
    assert np.array_equal(a["images"], b["images"])  # same seed, same images


def test_a_mistyped_or_missing_flag_never_starts_a_command_and_names_the_nearest_real_one(capsys, tmp_path):
    """`--step 100` was taken for `--steps 100` (argparse's abbreviations) and trained a full run; compile without
    --image named an image nothing publishes."""
    cases = [(["run", "--step", "100", "--store", tmp_path / "r"], "acgan run: error: unrecognized argument --step; "
                                                                 "did you mean --steps? (see `acgan run --help`)"),
             (["sample", "--num", "16", "--store", tmp_path / "s", "--class", "1", "--out", tmp_path / "x.png"],
              "acgan sample: error: unrecognized argument --num; did you mean -n? (see `acgan sample --help`)"),
             (["status", "--store", tmp_path / "s", "--jsno"], "did you mean --json?"),
             (["evaluate", "--store", tmp_path / "s", "--pair=3"], "unrecognized argument --pair=3; did you mean "
                                                                  "--pairs?"),
             # No image is published: a pipeline compiled for a made-up one would wait on its pull for ever.
             (["compile", "-o", tmp_path / "p.yaml"], "acgan compile: error: the following arguments are required: "
                                                      "--image (see `acgan compile --help`)")]
    for argv, fragment in cases:
        with pytest.raises(SystemExit) as exited:
            main([str(a) for a in argv])
        assert_one_line_error(exited.value.code, capsys.readouterr().err, fragment)
    assert not list(tmp_path.iterdir())  # nothing started


def test_bad_inputs(capsys, tmp_path, digits_store):
    store = str(digits_store.root)
    cases = [
        (["prepare", "--store", tmp_path / "s", "--dataset", "imagenet"], "--dataset"),
        (["prepare", "--store", tmp_path / "s", "--dataset", "folder"], "needs --source"),
        (["prepare", "--store", tmp_path / "s", "--dataset", "cifar10", "--source", tmp_path / "nope"], "does not exist"),
        (["prepare", "--store", tmp_path / "s", "--classes-per-split", 11], "larger than the 10 classes"),
        (["prepare", "--store", tmp_path / "s", "--resolution", 48], "--resolution"),
        (["train-split", "--store", store, "--split", 2, "--steps", 5], "split 2 is out of range"),
        (["train-split", "--store", store, "--split", 0, "--steps", 0], "--steps"),
        (["train-split", "--store", store, "--split", 0, "--keep-checkpoints", 1], "--keep-checkpoints"),
        (["train-split", "--store", tmp_path / "missing", "--split", 0], "check --store, or make one with `acgan run"),
        (["sample", "--store", store, "--class", 10, "--out", tmp_path / "x.png"], "class 10 is out of range"),
        (["sample", "--store", store, "--class", "eleven", "--out", tmp_path / "x.png"], "no class named 'eleven'"),
        (["sample", "--store", store, "--class", 3, "--out", tmp_path / "x.png"], "has no complete checkpoint"),
        (["run", "--store", tmp_path / "r", "--parallelism", 0],
         "--parallelism: Input should be greater than or equal to 1"),
        (["run", "--store", tmp_path / "r", "--classes-per-split", 11], "larger than the 10 classes of digits"),
        (["run", "--store", tmp_path / "r", "--split-ids", "0,5"], "outside the plan"),
        (["run", "--store", tmp_path / "r", "--split-ids", "a,b"], "separated by commas"),
        (["run", "--store", tmp_path / "r", "--dataset", "folder"], "needs --source"),
        (["submit", "--host", "http://127.0.0.1:9", "--store", "s3://acgan/x", "--parallelism", 0], "--parallelism"),
        (["compile", "-o", tmp_path / "p.yaml", *IMAGE, "--node-selector", "gpu"], "must be key=value"),
        (["compile", "-o", tmp_path / "p.yaml", "--image", "Bad Image"], "not an image reference"),
        (["compile", "-o", tmp_path / "no" / "p.yaml", *IMAGE], "does not exist"),
        (["status", "--store", tmp_path / "missing"], "does not exist"),
        (["rerun", "--store", store, "--local"], "no experiment settings"),
        (["evaluate", "--store", store, "--analyses", "diversity,foo"], "--analyses: unknown analysis foo: use a "
                                                                        "comma-separated subset of "
                                                                        "discriminability,diversity,joint,fidelity,"
                                                                        "precision_recall,density_coverage,"
                                                                        "intra_class_fid,cas"),
        (["run", "--store", tmp_path / "r", "--analyses", "fid"], "--analyses: unknown analysis fid"),
    ]
    for argv, fragment in cases:
        code, _, err = run(capsys, *argv)
        assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "r").exists()  # rejected before anything was written
    assert not (digits_store.root / "eval").exists()


def test_unreachable_store_and_wrong_credentials(capsys, monkeypatch, s3_env):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-123")
    code, _, err = run(capsys, "prepare", "--store", s3_env)
    assert_one_line_error(code, err, "rejected the credentials")
    assert "wrong-secret-123" not in err
    monkeypatch.setenv("ACGAN_S3_ENDPOINT", "http://127.0.0.1:9")
    code, _, err = run(capsys, "train-split", "--store", s3_env, "--split", 0)
    assert_one_line_error(code, err, "unreachable at http://127.0.0.1:9")


def test_console_script_exits_cleanly(tmp_path):
    """The installed `acgan` command, as a user runs it."""
    proc = subprocess.run(["acgan", "train-split", "--store", str(tmp_path / "none"), "--split", "0"],
                          capture_output=True, text=True, env={**os.environ, "PATH": os.path.dirname(sys.executable)
                                                               + os.pathsep + os.environ["PATH"]})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"acgan train-split: error: store {tmp_path / 'none'} does not exist: check --store, or make one with "
        f"`acgan run --store {tmp_path / 'none'}`"]


@pytest.mark.parametrize("uri", ["s3:/acgan-test/x", "s3:acgan-test/x", "S3:/acgan-test/x"])
def test_s3_without_two_slashes_is_refused_not_a_local_folder(capsys, tmp_path, monkeypatch, uri):
    monkeypatch.chdir(tmp_path)
    for argv in (["prepare", "--store", uri, "--dataset", "digits"], ["run", "--store", uri],
                 ["status", "--store", uri], ["prepare", "--store", "s", "--dataset", "folder", "--source", uri]):
        code, _, err = run(capsys, *argv)
        assert_one_line_error(code, err, f"{uri!r} is not an S3 URI", "s3://BUCKET/PREFIX")
    assert list(tmp_path.iterdir()) == []  # no folder named s3: (or S3:)
