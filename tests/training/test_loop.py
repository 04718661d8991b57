"""Real training steps on a small digits split: learning, resume, kill-and-resume, health stats, divergence."""

import math
import json
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F

from acgan.checkpoint import complete_steps, latest_checkpoint, save_checkpoint
from acgan.data.plan import load_plan, save_plan
from acgan.data.prepare import load_shard
from acgan.errors import UserError
from acgan.layout import TRAIN_STATE_FILE
from acgan.model import Discriminator, Generator
from acgan.training.loop import TrainingDiverged, model_config_for, train_split
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from tests.conftest import TINY, tiny_config


def _weights(store, split=0):
    _, files = latest_checkpoint(store, split, [TRAIN_STATE_FILE])
    return load_safetensors(files[TRAIN_STATE_FILE])


def _class_loss(D, store, cfg):
    images, labels = load_shard(store, cfg.split)
    x = images.float() / 127.5 - 1
    D.eval()
    with torch.no_grad():
        return F.cross_entropy(D(x)[1], labels - labels.min()).item()  # split 0 holds classes 0..4


def test_training_lowers_d_class_loss(digits_store):
    cfg = tiny_config(steps=60, width=0.125, lr=1e-3, checkpoint_every=60, tick_every=60)
    model_cfg, _ = model_config_for(digits_store, cfg)
    torch.manual_seed(cfg.seed)
    Generator(model_cfg)
    untrained = Discriminator(model_cfg)  # the same initial weights train_split draws
    before = _class_loss(untrained, digits_store, cfg)
    train_split(digits_store, cfg)
    trained = Discriminator(model_cfg)
    trained.load_state_dict({k[2:]: v for k, v in _weights(digits_store).items() if k.startswith("D.")})
    after = _class_loss(trained, digits_store, cfg)
    assert after < before - 0.3, (before, after)


def test_stats_lines_and_resume_with_larger_steps(digits_store):
    train_split(digits_store, tiny_config(steps=10))
    assert complete_steps(digits_store, 0) == [5, 10]
    result = train_split(digits_store, tiny_config(steps=20))
    assert result["resumed_from"] == 10 and result["step"] == 20
    assert complete_steps(digits_store, 0) == [15, 20]  # retention: the newest two
    lines = [json.loads(line) for line in digits_store.read_bytes("splits/split-00000/stats.jsonl").splitlines()]
    assert [s["step"] for s in lines] == [5, 10, 15, 20]
    for s in lines:
        assert set(s["ms_ssim"]) == {"0", "1", "2", "3", "4"}
        assert all(0 <= v <= 1 for v in s["ms_ssim"].values())
        assert 0 <= s["d_class_acc_fake"] <= 1 and 0 <= s["d_source_acc_real"] <= 1
    config = json.loads(digits_store.read_bytes("splits/split-00000/config.json"))
    assert config["train"]["steps"] == 20 and config["model"]["num_classes"] == 5
    # Asking for no more steps than done trains nothing.
    assert train_split(digits_store, tiny_config(steps=15))["resumed_from"] == 20


@pytest.mark.parametrize("augment", ["", "translation,cutout"])
def test_resumed_run_equals_uninterrupted(digits_store, tmp_path, single_thread, augment):
    """With augmentation too: its draws come from the checkpointed data generator."""
    import shutil

    from acgan.store import LocalStore

    other = LocalStore(tmp_path / "other")
    shutil.copytree(digits_store.root, other.root)
    train_split(digits_store, tiny_config(steps=20, augment=augment))
    train_split(other, tiny_config(steps=10, augment=augment))
    train_split(other, tiny_config(steps=20, augment=augment))
    a, b = _weights(digits_store), _weights(other)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_on_the_gpu_fast_path_layout_equals_uninterrupted(digits_store, tmp_path, single_thread,
                                                                  monkeypatch):
    """A GPU's channels-last weights and fused Adam, switched on here on the CPU: the restored Adam moments must
    pair with the same weight elements as in an uninterrupted run."""
    import shutil

    from acgan.store import LocalStore
    from acgan.training import loop
    from acgan.training.step import FastPath

    gpu_layout = FastPath(channels_last=True, fused_adam=True)
    monkeypatch.setattr(loop.FastPath, "resolve", classmethod(lambda cls, *args: gpu_layout))
    other = LocalStore(tmp_path / "other")
    shutil.copytree(digits_store.root, other.root)
    train_split(digits_store, tiny_config(steps=20, lr=0.01, d_width=0.25))
    train_split(other, tiny_config(steps=10, lr=0.01, d_width=0.25))
    train_split(other, tiny_config(steps=20, lr=0.01, d_width=0.25))
    assert json.loads(other.read_bytes("splits/split-00000/config.json"))["fast_path"] == gpu_layout.model_dump()
    a, b = _weights(digits_store), _weights(other)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), max((a[k] - b[k]).abs().max().item() for k in a)


def test_split_started_on_a_gpu_continues_on_the_cpu(digits_store, caplog):
    """A checkpoint as a GPU writes it: a CUDA generator's state (seed and offset, 16 bytes), and the device in the
    meta."""
    import logging

    cfg = tiny_config(steps=10, d_width=0.25)
    train_split(digits_store, cfg)
    step, files = latest_checkpoint(digits_store, 0)
    assert json.loads(files["meta.json"])["device"] == "cpu"
    tensors = load_safetensors(files[TRAIN_STATE_FILE])
    tensors["rng.data"] = torch.tensor([7, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0], dtype=torch.uint8)
    meta = {**json.loads(files["meta.json"]), "device": "cuda"}
    save_checkpoint(digits_store, 0, step + 1, {**files, TRAIN_STATE_FILE: save_safetensors(tensors),
                                                 "meta.json": json.dumps(meta).encode()})
    with caplog.at_level(logging.INFO):
        result = train_split(digits_store, cfg.model_copy(update={"steps": 15}))
    assert result["resumed_from"] == step + 1 and result["step"] == 15
    moved = [r.getMessage() for r in caplog.records if "not bit-identical" in r.getMessage()]
    assert len(moved) == 1 and "on cpu" in moved[0], moved


def test_killed_run_resumes_to_the_same_weights(digits_store, tmp_path, single_thread):
    """SIGKILL a real `acgan train-split` process after its first checkpoint; the resumed run ends bit-identical."""
    import shutil

    from acgan.store import LocalStore

    reference = LocalStore(tmp_path / "reference")
    shutil.copytree(digits_store.root, reference.root)
    train_split(reference, tiny_config(steps=100, checkpoint_every=10, tick_every=10))

    args = [sys.executable, "-m", "acgan_cli.main", "train-split", "--store", str(digits_store.root), "--split", "0",
            "--steps", "100", "--checkpoint-every", "10", "--tick-every", "10", "--batch-size", str(TINY["batch_size"]),
            "--width", str(TINY["width"]), "--d-width", str(TINY["d_width"])]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not complete_steps(digits_store, 0) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = complete_steps(digits_store, 0)
    assert done and done[-1] < 100, f"the process was not killed mid-run (checkpoints {done})"
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    a, b = _weights(reference), _weights(digits_store)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sigterm_checkpoints_and_exits_non_zero_then_resumes(digits_store):
    """SIGTERM (a preemption's first signal) to a real `acgan train-split` mid-run, far from any scheduled
    checkpoint: within a bound it saves the step it reached and exits non-zero (a retryable failure), and a restart
    continues from that step."""
    args = [sys.executable, "-m", "acgan_cli.main", "train-split", "--store", str(digits_store.root), "--split", "0",
            "--steps", "100000", "--checkpoint-every", "100000", "--tick-every", "1",
            "--batch-size", str(TINY["batch_size"]), "--width", str(TINY["width"]), "--d-width", str(TINY["d_width"])]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stats = digits_store.root / "splits" / "split-00000" / "stats.jsonl"
    deadline = time.time() + 120
    while not (stats.exists() and stats.read_text().count("\n") >= 2) and time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=30)  # Kubernetes' default grace period
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the trainer did not stop within 30 s of SIGTERM")
    assert proc.returncode == 2, err
    assert "stopped by SIGTERM at step" in err and "Traceback" not in err
    (step,) = complete_steps(digits_store, 0)
    assert 2 <= step < 100000
    result = train_split(digits_store, tiny_config(steps=step + 2, checkpoint_every=100000))
    assert result["resumed_from"] == step and complete_steps(digits_store, 0)[-1] == step + 2


def test_non_finite_loss_stops_without_writing_nan(digits_store):
    """A blown-up state (one NaN weight in D, as after an overflow) must stop training before any new checkpoint."""
    train_split(digits_store, tiny_config(steps=5))
    _, files = latest_checkpoint(digits_store, 0)
    tensors = load_safetensors(files[TRAIN_STATE_FILE])
    tensors["D.head.weight"][0, 0] = float("nan")
    save_checkpoint(digits_store, 0, 6, {**files, TRAIN_STATE_FILE: save_safetensors(tensors)})
    with pytest.raises(TrainingDiverged, match="diverged between steps 6 and 8"):
        train_split(digits_store, tiny_config(steps=20, tick_every=2))
    assert complete_steps(digits_store, 0) == [5, 6]


def test_checkpoint_of_other_model_refused(digits_store):
    train_split(digits_store, tiny_config(steps=5))
    with pytest.raises(UserError, match="different model"):
        train_split(digits_store, tiny_config(steps=10, width=0.125))
    # The 32 px G of the other layout (the demo's 8x8 start against the paper's 4x4): the message names the field.
    with pytest.raises(UserError, match=r"different model \(.*g_layout paper\b.*\) than requested \(.*g_layout "
                                        r"imagenet-start\b.*\)"):
        train_split(digits_store, tiny_config(steps=10, g_layout="imagenet-start"))
    assert complete_steps(digits_store, 0) == [5]


def test_data_of_other_resolution_refused(digits_store):
    plan = load_plan(digits_store)
    save_plan(digits_store, plan.model_copy(update={"resolution": 64}))  # plan and shards disagree
    with pytest.raises(UserError, match=r"has images of shape \(1, 32, 32\), the plan says 1x64x64: the shard is from "
                       "another plan"):
        train_split(digits_store, tiny_config(steps=5))


def test_mode_seeking_pairs_classes_and_trains(digits_store):
    result = train_split(digits_store, tiny_config(steps=5, mode_seeking=1.0))
    assert result["step"] == 5 and math.isfinite(result["loss_g"])


def test_fast_path_defaults_per_device():
    from acgan.training.step import FastPath

    assert FastPath.resolve(torch.device("cpu")) == FastPath()  # the plain float32 eager step
    assert FastPath.resolve(torch.device("cuda")) == FastPath(bf16=True, channels_last=True, fused_adam=True,
                                                              compile=True)
    assert FastPath.resolve(torch.device("cuda"), precision="fp32", compile="off").bf16 is False


def test_bf16_is_recorded_and_trains_like_float32(digits_store, tmp_path, single_thread):
    """bf16 autocast on the CPU: the saved config says so, and the loss curve follows the float32 one."""
    import shutil

    from acgan.store import LocalStore

    other = LocalStore(tmp_path / "fp32")
    shutil.copytree(digits_store.root, other.root, dirs_exist_ok=True)
    curves = {}
    for store, precision in ((digits_store, "bf16"), (other, "fp32")):
        train_split(store, tiny_config(steps=40, tick_every=10, checkpoint_every=40, precision=precision, d_width=0.25))
        config = json.loads(store.read_bytes("splits/split-00000/config.json"))
        assert config["fast_path"]["bf16"] is (precision == "bf16")
        lines = store.read_bytes("splits/split-00000/stats.jsonl").decode().splitlines()
        curves[precision] = [json.loads(line)["loss_d"] for line in lines]
    assert all(math.isfinite(v) for v in curves["bf16"])
    for a, b in zip(curves["bf16"], curves["fp32"]):
        assert abs(a - b) < 0.25 * b


def test_compiled_d_is_built_once_per_update(monkeypatch):
    """torch.compile guards on each input's dtype, layout and requires_grad: real images in float32, detached fakes
    and fakes with grad in bf16 made it build D three times. Now D is built twice, for its own update and for G's
    (with D's weights frozen), in the first step, and never again. Counted with dynamo's own frame counter (its tracing
    and guards are real; only the code generation is left out)."""
    from torch._dynamo.testing import CompileCounter

    from acgan.model import ModelConfig
    from acgan.training.step import FastPath, TrainStep, make_optimizers

    torch._dynamo.reset()
    counters, real_compile = {}, torch.compile

    def counting_compile(model):
        counters[type(model).__name__] = CompileCounter()
        return real_compile(model, backend=counters[type(model).__name__])

    monkeypatch.setattr(torch, "compile", counting_compile)
    fast = FastPath(bf16=True, channels_last=True, fused_adam=True, compile=True)
    cfg = ModelConfig(resolution=32, channels=3, num_classes=4, width=0.0625, d_width=0.125)
    G, D = Generator(cfg), Discriminator(cfg)
    step = TrainStep(G, D, *make_optimizers(G, D, 2e-4, (0.5, 0.999), fast), fast)
    built = []
    for _ in range(3):
        stats = step(torch.rand(8, 3, 32, 32) * 2 - 1, torch.randint(4, (8,)), torch.randn(8, cfg.noise_dim),
                     torch.randint(4, (8,)))
        built.append((counters["Discriminator"].frame_count, counters["Generator"].frame_count))
    assert torch.isfinite(stats).all()
    assert built == [(2, 1)] * 3
    torch._dynamo.reset()


def test_training_reports_its_step_between_ticks(digits_store, tmp_path, monkeypatch):
    """`acgan run`'s training bar sat at 0 and jumped by a tick's steps (one tick every 100 per split), its clock
    frozen between: the trainer reports its step as a progress event (acgan/progress.py) every EVERY_SECONDS from
    step 1, its resumed step at once, and a tick's figures with the tick: those TICK_FIGURES names, by the names
    they are shown under (one more entry there, one more figure shown)."""
    from acgan import progress
    from acgan.training import loop

    events = progress.events_file(tmp_path)
    monkeypatch.setenv(progress.ENVIRONMENT, str(events))
    monkeypatch.setattr(progress, "EVERY_SECONDS", 0.0)  # every step: this machine's speed is not the test's
    monkeypatch.setitem(loop.TICK_FIGURES, "d_class_acc_real", "cls_real")
    train_split(digits_store, tiny_config(split=0, steps=12, tick_every=12, checkpoint_every=6))
    reported = [e for e in progress.read_events(events) if e.part == progress.STEPS]
    assert [e.step for e in reported] == [0] + [s for s in range(1, 13) for _ in range(2 if s in (6, 12) else 1)]
    assert {e.stage for e in reported} == {progress.TRAIN} and {e.total for e in reported} == {12}
    ticks = [e for e in reported if e.figures]
    assert [e.step for e in ticks] == [6, 12] and set(ticks[0].figures) == {
        "loss_d", "loss_g", "cls_fake", "ms_ssim", "cls_real"}
    train_split(digits_store, tiny_config(split=0, steps=14, tick_every=14, checkpoint_every=7))
    resumed = [e for e in progress.read_events(events) if e.part == progress.STEPS][len(reported):]
    assert resumed[0].step == 12  # the display starts the split where it resumed
