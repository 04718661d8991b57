#!/usr/bin/env bash
# The project's GPU check: does the CUDA path work end to end on a fresh single-GPU machine without a package registry?
#
# From the root of a clean copy of the project, in under 8 minutes: install the project (--no-deps) on the machine's
# own torch, prepare 10 synthetic classes at 128 px, train one split on the fast path with torch.compile on
# (`--compile on`: Triton's kernels and launcher on a GPU, Inductor's C++ on the CPU of the tiny mode; the image
# check, tests/deploy/image_check.py, trains compiled in the built image on a CPU) and SIGKILL it once its first
# checkpoint is complete, resume it, assemble the ensemble, evaluate it on the GPU, and spend the time left on
# `acgan bench`.
# Prints one PASS/FAIL/SKIP line per step (also in $OUT/summary.txt); exits non-zero if a step failed.
#
#   OUT=/tmp/gpu-check WHEELS=.smoke bash bench/gpu-check.sh     # on the GPU machine
#   GPU_CHECK_TINY=1 OUT=/tmp/gpu-check bash bench/gpu-check.sh  # the same steps on the CPU at tiny sizes (~1 min)
#
# Environment:
#   OUT                  results: check.log, summary.txt, one log per step, train-config.json, stats.jsonl,
#                        metrics.json, bench-<name>.json and .md (default /tmp/acgan-gpu-check)
#   WHEELS               a folder of wheels the machine lacks (pydantic and its dependencies); installed --no-index
#   GPU_CHECK_TINY=1     CPU, 5 classes at 32 px, a small network: the CI dry run
#   GPU_CHECK_PYTHON     the interpreter that has torch (default: the first python3/python that imports it)
#   GPU_CHECK_WORK       scratch folder, emptied first (default /tmp/acgan-gpu-check-work)
#   GPU_CHECK_BUDGET_S   the whole check's time budget; benchmarks get what is left (default 470)

set -uo pipefail
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 TQDM_DISABLE=1
unset PYTHONPATH  # the installed copy must be the one that runs
T0=$(date +%s)
REPO=$(pwd)
OUT=${OUT:-/tmp/acgan-gpu-check}
WORK=${GPU_CHECK_WORK:-/tmp/acgan-gpu-check-work}
BUDGET=${GPU_CHECK_BUDGET_S:-470}
TINY=${GPU_CHECK_TINY:-0}
mkdir -p "$OUT" && rm -rf "$WORK" && mkdir -p "$WORK" || exit 1
OUT=$(cd "$OUT" && pwd)
: > "$OUT/summary.txt"
exec > >(tee "$OUT/check.log") 2>&1
FAILED=0

report() {  # report PASS|FAIL|SKIP STEP DETAIL
    [ "$1" = FAIL ] && FAILED=$((FAILED + 1))
    echo "$1 $2: $3" | tee -a "$OUT/summary.txt"
}
elapsed() { echo $(( $(date +%s) - T0 )); }
remaining() { echo $(( BUDGET - $(elapsed) )); }
limit() {  # limit MAX: MAX seconds, or what the budget has left if less (at least 5)
    local r=$(( $(remaining) - 5 )); [ "$r" -lt 5 ] && r=5; [ "$1" -lt "$r" ] && echo "$1" || echo "$r"
}
why() { grep -v '^\s*$' "$1" 2>/dev/null | tail -n 2 | tr '\n' ' ' | cut -c1-300; }
run_step() {  # run_step LOG MAX_SECONDS CMD...: the command's output to $OUT/LOG, under a time limit
    local log=$OUT/$1 max=$2; shift 2
    echo "[$(elapsed)s] $*" > "$log"
    timeout "$(limit "$max")" "$@" >> "$log" 2>&1
}

if [ "$TINY" = 1 ]; then
    DEVICE=cpu RES=32 CLASSES=5 PER_CLASS=20 BATCH=8 EVERY=4
    NETWORK=(--width 0.0625 --d-width 0.25)
    EVAL=(--samples-per-class 6 --pairs 10 --real-per-class 10 --classifier-steps 5)
    BENCHES=()
    FIRST_CHECKPOINT_S=360  # Inductor compiles G and D's C++ kernels first: about a minute of one core
    export OMP_NUM_THREADS=1 TORCHINDUCTOR_COMPILE_THREADS=1  # no pool of compile workers on a small CPU
else
    DEVICE=cuda RES=128 CLASSES=10 PER_CLASS=100 BATCH=100 EVERY=100
    NETWORK=()
    EVAL=(--samples-per-class 100 --pairs 1000 --real-per-class 100 --classifier-steps 300)
    BENCHES=(training ms_ssim evaluation data)  # most wanted first: each runs only if the budget still has room
    FIRST_CHECKPOINT_S=240
fi
export TORCHINDUCTOR_CACHE_DIR=$WORK/inductor  # the resumed run and the bench reuse the first run's kernels

# 0. an interpreter with torch that sees the device
PY=${GPU_CHECK_PYTHON:-}
if [ -z "$PY" ]; then
    for candidate in python3 python; do
        if command -v "$candidate" >/dev/null && "$candidate" -c 'import torch' 2>/dev/null; then
            PY=$(command -v "$candidate"); break
        fi
    done
fi
if [ -z "$PY" ]; then report FAIL 0-device "no python3 with torch on PATH (set GPU_CHECK_PYTHON)"; exit 1; fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null; nproc; } \
    > "$OUT/machine.txt"
run_step 0-device.log 60 "$PY" -c '
import sys, torch
device = sys.argv[1]
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)
if device == "cuda":
    assert torch.cuda.is_available(), "torch sees no CUDA device"
    x = torch.randn(256, 256, device="cuda", dtype=torch.bfloat16)
    print(torch.cuda.get_device_name(0), "bf16 matmul", (x @ x).float().abs().mean().item())
' "$DEVICE"
if [ $? -eq 0 ]; then report PASS 0-device "$(tail -1 "$OUT/0-device.log")"
else report FAIL 0-device "$(why "$OUT/0-device.log")"; exit 1; fi

# 1. install: a venv that sees the interpreter's packages (torch and its CUDA libraries are not copied), the
#    carried wheels, then the project itself without dependencies and without an index
VENV=$WORK/venv
SITE=$("$PY" -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')
install() {
    timeout 60 "$PY" -m venv --without-pip "$VENV" || return 1
    local own; own=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') || return 1
    echo "import site; site.addsitedir('$SITE')" > "$own/zz-machine-packages.pth"  # after the venv's own packages
    if [ -n "${WHEELS:-}" ]; then
        timeout 120 "$VENV/bin/python" -m pip install --no-index --no-deps "$WHEELS"/*.whl || return 1
    fi
    timeout 120 "$VENV/bin/python" -m pip install --no-index --no-deps --no-build-isolation -e "$REPO" || return 1
    timeout 60 "$VENV/bin/python" - "$REPO" <<'EOF' || return 1
import os, sys
import acgan, pydantic, safetensors, torch, torchmetrics
where = os.path.realpath(acgan.__file__)
assert where.startswith(os.path.realpath(sys.argv[1]) + os.sep), f"acgan imported from {where}"
print("project from", os.path.dirname(where), "torch", torch.__version__, "pydantic", pydantic.VERSION)
EOF
    [ -x "$VENV/bin/acgan" ]
}
if install > "$OUT/1-install.log" 2>&1; then report PASS 1-install "$(tail -1 "$OUT/1-install.log")"
else report FAIL 1-install "$(why "$OUT/1-install.log")"; exit 1; fi
ACGAN=$VENV/bin/acgan
cd "$WORK" || exit 1  # files the commands write by default stay out of the repository

# 2. prepare
STORE=$WORK/store
if run_step 2-prepare.log 120 "$ACGAN" prepare --store "$STORE" --dataset synthetic --num-classes $CLASSES \
        --images-per-class $PER_CLASS --resolution $RES --classes-per-split $CLASSES; then
    report PASS 2-prepare "$CLASSES synthetic classes x $PER_CLASS images at ${RES} px, one split"
else report FAIL 2-prepare "$(why "$OUT/2-prepare.log")"; fi

# 3. train on the device; SIGKILL (a preemption) once the first checkpoint is complete and the next is under way
SPLIT=$STORE/splits/split-00000
newest() {  # the newest complete checkpoint's step
    ls "$SPLIT"/checkpoints/step-*/COMPLETE.json 2>/dev/null | sed -E 's#.*/step-0*([0-9]+)/.*#\1#' | sort -n | tail -1
}
TRAIN=("$ACGAN" train-split --store "$STORE" --split 0 --batch-size $BATCH --checkpoint-every $EVERY
       --tick-every $EVERY --device $DEVICE --compile on "${NETWORK[@]}")
echo "[$(elapsed)s] ${TRAIN[*]} --steps 1000000" > "$OUT/3-train.log"
"${TRAIN[@]}" --steps 1000000 >> "$OUT/3-train.log" 2>&1 &
TRAINER=$!
GIVE_UP=$(( $(date +%s) + $(limit $FIRST_CHECKPOINT_S) ))
while kill -0 $TRAINER 2>/dev/null && [ -z "$(newest)" ] && [ "$(date +%s)" -lt $GIVE_UP ]; do sleep 0.2; done
[ -n "$(newest)" ] && sleep 1
kill -KILL $TRAINER 2>/dev/null; wait $TRAINER 2>/dev/null; TRAIN_RC=$?
KILLED_AT=$(newest)
cp "$SPLIT/config.json" "$OUT/train-config.json" 2>/dev/null
FAST=$("$VENV/bin/python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["fast_path"])' \
       "$OUT/train-config.json" 2>/dev/null)
if [ -n "$KILLED_AT" ] && [ $TRAIN_RC -eq 137 ] && [[ "$FAST" == *"'compile': True"* ]]; then
    report PASS 3-train "fast path $FAST; SIGKILLed with step $KILLED_AT complete"
else report FAIL 3-train "exit $TRAIN_RC, fast path '$FAST', newest complete checkpoint '${KILLED_AT}': $(why \
        "$OUT/3-train.log")"; fi

# 4. resume from the newest complete checkpoint, one more interval
if [ -n "$KILLED_AT" ]; then
    TARGET=$(( KILLED_AT + EVERY ))
    if run_step 4-resume.log 180 "${TRAIN[@]}" --steps $TARGET && grep -q "resuming from step $KILLED_AT" \
            "$OUT/4-resume.log" && [ "$(newest)" = "$TARGET" ]; then
        report PASS 4-resume "from step $KILLED_AT to $TARGET"
    else report FAIL 4-resume "$(why "$OUT/4-resume.log")"; fi
else report SKIP 4-resume "no checkpoint to resume from"; fi
cp "$SPLIT/stats.jsonl" "$OUT/stats.jsonl" 2>/dev/null

# 5. assemble, 6. evaluate on the device
STEP=$(newest)
if [ -n "$STEP" ] && run_step 5-assemble.log 60 "$VENV/bin/python" -c '
import sys
from acgan.ensemble import assemble_ensemble
from acgan.store import open_store
manifest = assemble_ensemble(open_store(sys.argv[1]), int(sys.argv[2]))
print(len(manifest.classes), "classes at step", sys.argv[2])' "$STORE" "$STEP"; then
    report PASS 5-assemble "$(tail -1 "$OUT/5-assemble.log")"
    if run_step 6-evaluate.log 180 "$ACGAN" evaluate --store "$STORE" --device $DEVICE "${EVAL[@]}" \
            && cp "$STORE/eval/metrics.json" "$OUT/metrics.json"; then
        figures=$(grep -E '^(accuracy|ms_ssim_mean|fid) ' "$OUT/6-evaluate.log" | tr -s ' ' '=' | tr '\n' ' ')
        report PASS 6-evaluate "$figures"
    else report FAIL 6-evaluate "$(why "$OUT/6-evaluate.log")"; fi
else
    report FAIL 5-assemble "no complete checkpoint, or: $(why "$OUT/5-assemble.log")"
    report SKIP 6-evaluate "nothing assembled"
fi

# 7. benchmarks with the time left, one at a time, each with its own JSON and table
if [ "$TINY" = 1 ]; then
    report SKIP 7-bench "tiny mode: the CPU benchmarks are checked by tests/acgan_cli/benchmarks/"
fi
for name in "${BENCHES[@]}"; do
    left=$(( $(remaining) - 5 ))
    if [ $left -lt 60 ]; then report SKIP 7-bench-$name "${left}s of the budget left"; continue; fi
    if run_step 7-bench-$name.log $left "$ACGAN" bench --device $DEVICE --only $name \
            --out "$OUT/bench-$name.json" --markdown "$OUT/bench-$name.md"; then
        report PASS 7-bench-$name "$(grep -cE '^\| ' "$OUT/bench-$name.md") table lines in bench-$name.md"
    else report FAIL 7-bench-$name "exit $? (124: out of time): $(why "$OUT/7-bench-$name.log")"; fi
done

echo "---- $(elapsed)s; results in $OUT"
cat "$OUT/summary.txt"
[ $FAILED -eq 0 ] && echo "ALL PASS" || echo "$FAILED FAILED"
[ $FAILED -eq 0 ]
