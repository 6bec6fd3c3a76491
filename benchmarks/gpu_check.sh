#!/usr/bin/env bash
# The one script to run when a GPU machine is lent: every GPU test and the GPU benchmarks, each step
# timed, its output tee'd into ${OUT:-gpu_out}/<step>.log (the benchmarks' JSON files beside them).
#
#     bash benchmarks/gpu_check.sh            # from the repository root; OUT=dir to choose the folder
#
# Works from a fresh copy of the repository on a machine without internet: when .venv/bin/python is
# missing it runs `make setup` (pip install -e ".[dev]" from the wheels on local disk). A failing step
# does not stop the others; the summary at the end lists each step's exit status and seconds (also in
# summary.txt), and the script exits nonzero if any step failed.
#
# Budget: about 8 minutes on an H200 in all. The step counts below are chosen for it: each vision run
# times 5 interleaved repetitions of 250 steps per loop (batch 32, nf 64: a few ms a step in eager mode,
# so ~30 s a run with start-up), the compiled run 3 repetitions (its warm-up compiles the backbone for
# both loops and clframe's evaluation: the bulk of its time); every step has a time limit (`timeout`)
# so that one hung step cannot eat the rest of the budget.
set -euo pipefail

cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-gpu_out}"
mkdir -p "$OUT_DIR"
PY=.venv/bin/python

names=()
rcs=()
secs=()

now() { date +%s.%N; }

# run_step NAME LIMIT_S COMMAND...: run COMMAND (at most LIMIT_S seconds), its output into NAME.log
run_step() {
    local name=$1 limit=$2
    shift 2
    echo
    echo "=== $name: $* (limit ${limit}s)"
    local start rc
    start=$(now)
    set +e
    timeout -k 10 "$limit" "$@" 2>&1 | tee "$OUT_DIR/$name.log"
    rc=${PIPESTATUS[0]}
    set -e
    names+=("$name")
    rcs+=("$rc")
    secs+=("$(awk -v a="$start" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')")
    echo "=== $name: exit $rc after ${secs[-1]} s"
}

summary() {
    local failed=0 i
    for i in "${!rcs[@]}"; do
        [ "${rcs[$i]}" = 0 ] || failed=$((failed + 1))
    done
    {
        printf '%-28s %6s %9s\n' step exit seconds
        for i in "${!names[@]}"; do
            printf '%-28s %6s %9s\n' "${names[$i]}" "${rcs[$i]}" "${secs[$i]}"
        done
        echo "$failed of ${#names[@]} steps failed"
    } | tee "$OUT_DIR/summary.txt"
    [ "$failed" = 0 ]
}

if [ ! -x "$PY" ]; then
    run_step setup 600 make setup
    if [ "${rcs[-1]}" != 0 ]; then
        echo "make setup failed: nothing else can run"
        summary || exit 1
    fi
fi

# a. the machine: driver, GPU, and the versions the benchmarks run under
run_step nvidia-smi 30 nvidia-smi
run_step versions 60 "$PY" -c '
import torch
try:
    import triton
    tv = triton.__version__
except ImportError:
    tv = None
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "triton", tv)
print("device", torch.cuda.get_device_name() if torch.cuda.is_available() else "NO CUDA")'

# b. every GPU-marked test (skipped ones are listed with their reason)
run_step pytest-gpu 240 "$PY" -m pytest -m gpu -q -rs

# c. the SRWM Triton kernel against the naive loop at T = 1024, forward and forward + backward, fp32 and
# bf16, with each one's peak memory (benchmarks/kernels.py's --lengths; --short on a GPU is the same T)
run_step kernels 180 "$PY" benchmarks/kernels.py --device cuda --lengths 1024 --repeats 5 --json "$OUT_DIR/kernels.json"

# d. split_cifar10's step at DER's width: clframe vs the plain loop, fp32 and bf16, with and without
# channels-last, then compiled at bf16 + channels-last
VISION=(benchmarks/vision.py --device cuda --nf 64 --steps 250)
run_step vision-32 120 "$PY" "${VISION[@]}" --repeats 5 --precision 32-true --json "$OUT_DIR/vision-32.json"
run_step vision-32-cl 120 "$PY" "${VISION[@]}" --repeats 5 --precision 32-true --channels-last \
    --json "$OUT_DIR/vision-32-cl.json"
run_step vision-bf16 120 "$PY" "${VISION[@]}" --repeats 5 --precision bf16-mixed --json "$OUT_DIR/vision-bf16.json"
run_step vision-bf16-cl 120 "$PY" "${VISION[@]}" --repeats 5 --precision bf16-mixed --channels-last \
    --json "$OUT_DIR/vision-bf16-cl.json"
run_step vision-bf16-cl-compile 300 "$PY" "${VISION[@]}" --repeats 3 --precision bf16-mixed --channels-last \
    --compile --json "$OUT_DIR/vision-bf16-cl-compile.json"

# e. the throughput benchmark (MLP batch 64: clframe's engines vs a plain loop vs Avalanche Naive) on CUDA
run_step throughput 240 "$PY" benchmarks/throughput.py --device cuda --json "$OUT_DIR/throughput.json"

summary
