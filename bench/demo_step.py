"""The embedded run's training step (the demo preset's networks: G width 0.125, D width 0.5, 32 px, one channel,
5 classes, batch 64, dropout 0.25, mode seeking 0.2) on one thread, as each of `acgan run`'s two splits trains it,
timed in two or more checkouts of the project side by side: rounds alternate between them, so that a load on the
machine falls on all of them alike, and the time is the process's CPU time (a busy machine lengthens the wall time of
a step, far less the CPU time it takes).

    git worktree add /tmp/before <commit>
    python bench/demo_step.py --checkout /tmp/before --checkout . --rounds 5

Prints a table (ms per step, median of the rounds, and steps/s against the first checkout) and writes it as JSON
with --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

STEP = """
import json, sys, time, torch
torch.set_num_threads(1)
import acgan
from acgan.model import Discriminator, Generator, ModelConfig
from acgan.training.step import FastPath, TrainStep, make_optimizers
cfg = ModelConfig(resolution=32, channels=1, num_classes=5, width=0.125, d_width=0.5, d_dropout=0.25,
                  d_noise_std=0.0, g_layout="imagenet-start")
torch.manual_seed(0)
G, D = Generator(cfg), Discriminator(cfg)
step = TrainStep(G, D, *make_optimizers(G, D, 2e-4, (0.5, 0.999), FastPath()), FastPath(), False, 0.2)
x, y = torch.rand(64, 1, 32, 32) * 2 - 1, torch.randint(0, 5, (64,))
def steps(n):
    for _ in range(n):
        step(x, y, torch.randn(64, cfg.noise_dim), torch.randint(0, 5, (64,)))
steps(3)
start = time.process_time()
steps(int(sys.argv[1]))
print(json.dumps([(time.process_time() - start) / int(sys.argv[1]) * 1000, acgan.__file__]))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkout", type=Path, action="append", required=True, help="a checkout of the project (twice or more)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=20, help="timed steps per round and checkout")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    times: dict[str, list[float]] = {str(c): [] for c in args.checkout}
    for r in range(args.rounds):
        for checkout in args.checkout:
            env = {**os.environ, "PYTHONPATH": str(checkout.resolve()), "OMP_NUM_THREADS": "1"}
            out = subprocess.run([sys.executable, "-c", STEP, str(args.steps)], env=env, check=True, cwd=checkout,
                                 capture_output=True, text=True).stdout
            ms, package = json.loads(out)
            if not Path(package).resolve().is_relative_to(checkout.resolve()):
                sys.exit(f"--checkout {checkout}: its step came from {Path(package).parent}, not from the checkout "
                         "(a commit from before the acgan/ layout?): give a checkout that has acgan/")
            times[str(checkout)].append(ms)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{v[-1]:.0f} ms" for v in times.values()), file=sys.stderr)
    first = statistics.median(times[str(args.checkout[0])])
    rows = [{"checkout": c, "commit": subprocess.run(["git", "-C", c, "rev-parse", "--short", "HEAD"],
                                                      capture_output=True, text=True).stdout.strip(),
             "ms_per_step": statistics.median(v), "rounds": v, "speed_vs_first": first / statistics.median(v)}
            for c, v in times.items()]
    print("| checkout | commit | CPU ms per step (median) | steps/s vs the first |\n| --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['checkout']} | {row['commit']} | {row['ms_per_step']:.0f} | {row['speed_vs_first']:.2f}x |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
