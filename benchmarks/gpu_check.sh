#!/usr/bin/env bash
# The paper-scale measurements on one GPU machine, offline, in about 6-8 minutes:
#
#   benchmarks/gpu_check.sh RESULTS_DIR            on a machine with a CUDA GPU
#   benchmarks/gpu_check.sh --dry-run RESULTS_DIR  the same steps on CPU at micro-ViT sizes (checks the script)
#
# 1. checks that PyTorch sees a CUDA GPU (exit 3 with one clear line if not);
# 2. installs the wheels in benchmarks/wheels/*.whl, if any, into a private folder (no network, no
#    index: see benchmarks/wheels/README), and checks that the library's imports are there;
# 3. avpet bench --device cuda --backbone vit_base_patch16_224 --json (bf16 autocast, fused AdamW,
#    fused attention; random weights)                      -> RESULTS_DIR/bench_cuda_vit_base_patch16_224.json
# 4. avpet reproduce table4 --backbone vit_base_patch16_224 --random-weights --device cuda --epochs 1
#    --json: the four rows of Table 4 on SynthAVE at ViT-B/16 sizes (rendered once by loader workers,
#    cached under $AVPET_CACHE_DIR), one epoch each         -> RESULTS_DIR/reproduce_table4_cuda.json
# 5. if time is left: the AV-PEA and full fine-tuning training steps again under torch.compile
#                                                           -> RESULTS_DIR/bench_cuda_compile.json
# Every step's log goes to RESULTS_DIR/log.txt, the machine's description to RESULTS_DIR/machine.json,
# and RESULTS_DIR/summary.txt lists what ran and how it ended: at most seven files, so that all of
# them come back from a device machine. Step 5 failing or timing out does not fail the script;
# steps 3 and 4 do.
set -uo pipefail

DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
if [ $# -ne 1 ]; then
    echo "usage: benchmarks/gpu_check.sh [--dry-run] RESULTS_DIR" >&2
    exit 2
fi
RESULTS=$1
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
BUDGET_S=${AVPET_GPU_CHECK_BUDGET_S:-480}
STARTED=$(date +%s)
mkdir -p "$RESULTS" || { echo "gpu_check: cannot create $RESULTS" >&2; exit 2; }
RESULTS=$(cd "$RESULTS" && pwd)
cd "$ROOT" || exit 2
: >"$RESULTS/summary.txt"
: >"$RESULTS/log.txt"
LOG="$RESULTS/log.txt"

say() { echo "[gpu_check $(date +%H:%M:%S)] $*" | tee -a "$RESULTS/summary.txt" >&2; }
elapsed() { echo $(( $(date +%s) - STARTED )); }

# -- 1. a GPU -----------------------------------------------------------------------------------
if [ "$DRY" = 1 ]; then
    DEVICE=cpu BACKBONE=micro_vit BENCH_EXTRA="--batch 2 --repeats 1"
    export AVPET_UNPINNED=${AVPET_UNPINNED:-0}
    say "dry run: the steps on CPU at micro-ViT sizes, nothing is measured for the book"
else
    DEVICE=cuda BACKBONE=vit_base_patch16_224 BENCH_EXTRA=""
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv >"$RESULTS/nvidia-smi.csv" 2>&1 || true
    fi
    "$PY" -c "import torch" 2>>"$LOG"
    if [ $? -ne 0 ]; then
        say "FAILED: $PY cannot import torch ($(tail -n 1 "$LOG")); set PYTHON to the interpreter that has PyTorch"
        exit 4
    fi
    if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() and torch.cuda.device_count() > 0 else 1)" 2>>"$LOG"; then
        say "FAILED: no CUDA GPU: PyTorch ($PY) sees no CUDA device (torch.cuda.is_available() is False); nothing was measured"
        echo "gpu_check: no CUDA GPU visible to PyTorch; this script measures a GPU and does nothing without one (use --dry-run to check it on CPU)" >&2
        exit 3
    fi
fi

# -- 2. packages --------------------------------------------------------------------------------
WHEELS=${AVPET_WHEELS:-$ROOT/benchmarks/wheels}
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    SITE=${AVPET_SITE:-/tmp/avpet-site}
    say "installing $(ls "$WHEELS"/*.whl | wc -l) wheel(s) from $WHEELS into $SITE (no index, no dependencies)"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl \
        >>"$LOG" 2>&1 || { say "FAILED: installing the wheels (see log.txt)"; exit 4; }
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"   # the library from this working tree, not installed
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export AVPET_CACHE_DIR=${AVPET_CACHE_DIR:-/tmp/avpet-cache}
"$PY" - >"$RESULTS/imports.txt" 2>&1 <<'PYEOF'
import importlib.util, sys
needed = ["torch", "torchaudio", "timm", "safetensors", "tqdm", "numpy"]
missing = [name for name in needed if importlib.util.find_spec(name) is None]
optional = [name for name in ("av", "soundfile") if importlib.util.find_spec(name) is None]
print("missing:", missing, "| not installed (only real media needs them):", optional)
sys.exit(1 if missing else 0)
PYEOF
imports_rc=$?
cat "$RESULTS/imports.txt" >>"$LOG"
say "packages: $(tail -n 1 "$RESULTS/imports.txt")"
rm -f "$RESULTS/imports.txt"
if [ $imports_rc -ne 0 ]; then
    say "FAILED: packages missing; put their wheels in benchmarks/wheels (its README)"
    exit 4
fi
"$PY" - >"$RESULTS/machine.json" 2>>"$LOG" <<'PYEOF'
import json, os, platform, torch, timm
info = {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
        "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "cpus": os.cpu_count(),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}
print(json.dumps(info, indent=2))
PYEOF
say "machine: $(tr -d '\n' <"$RESULTS/machine.json" | tr -s ' ')"

run() {  # run NAME SECONDS OUTPUT.json COMMAND...: one step, its JSON on stdout, its stderr in log.txt
    local name=$1 limit=$2 out=$3
    shift 3
    say "start $name (limit ${limit}s): $*"
    local t0=$(date +%s)
    local err="$RESULTS/.$name.err"
    timeout --signal=INT --kill-after=20 "$limit" "$@" >"$RESULTS/.$out.tmp" 2>"$err"
    local rc=$?
    { echo "== $name: $* (exit $rc)"; cat "$err"; } >>"$LOG"
    local last=$(tail -n 1 "$err")
    rm -f "$err"
    if [ $rc -eq 0 ] && "$PY" -c "import json,sys; json.load(open(sys.argv[1]))" "$RESULTS/.$out.tmp" 2>/dev/null; then
        mv "$RESULTS/.$out.tmp" "$RESULTS/$out"
        say "done  $name in $(( $(date +%s) - t0 ))s -> $out"
        return 0
    fi
    rm -f "$RESULTS/.$out.tmp"
    if [ $rc -eq 124 ]; then say "FAILED $name: timed out after ${limit}s (log.txt)"; else say "FAILED $name: exit $rc: $last"; fi
    return 1
}

# -- 3. the benchmark ---------------------------------------------------------------------------
status=0
run bench 240 "bench_${DEVICE}_${BACKBONE}.json" \
    "$PY" -m avpet_core.cli bench --device "$DEVICE" --backbone "$BACKBONE" $BENCH_EXTRA --json || status=1

# -- 4. Table 4 at ViT-B/16 sizes, one epoch -----------------------------------------------------
run reproduce 300 "reproduce_table4_${DEVICE}.json" \
    "$PY" -m avpet_core.cli reproduce table4 --backbone "$BACKBONE" --random-weights --device "$DEVICE" --epochs 1 --json \
    || status=1

# -- 5. torch.compile, if the budget allows ----------------------------------------------------
left=$(( BUDGET_S - $(elapsed) ))
if [ "$left" -gt 150 ]; then
    run compile $(( left - 30 )) "bench_${DEVICE}_compile.json" \
        "$PY" -m avpet_core.cli bench --device "$DEVICE" --backbone "$BACKBONE" --variants avpea/train,full/train --compile \
        $BENCH_EXTRA --json || say "(the compile step is optional; its failure does not fail the check)"
else
    say "skipped compile: ${left}s of the ${BUDGET_S}s budget left"
fi

say "finished in $(elapsed)s with status $status; results in $RESULTS"
exit $status
