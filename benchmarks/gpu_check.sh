#!/usr/bin/env bash
# GPU checks in one call, for a machine with a CUDA GPU: the GPU test grid, then the kernel, scheduler, refinement
# and pipeline benchmarks on CUDA. One log (steps.log), JSON and Markdown tables go to $OUT (default /tmp/clipsam-gpu).
#
#     bash benchmarks/gpu_check.sh                    # in a checkout whose environment has clipsam installed
#     WHEELS=.whl bash benchmarks/gpu_check.sh        # install the wheels in .whl (--no-deps) into /tmp/site first
#
# Each step has its own time limit so that one slow step cannot take the others' results with it.
set -u
OUT=${OUT:-/tmp/clipsam-gpu}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -n "${WHEELS:-}" ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
  $PY -c "import platform, torch, triton, open_clip, clipsam; print('python', platform.python_version(), 'torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, 'open_clip', open_clip.__version__, torch.cuda.get_device_name())"
  nproc; } 2>&1 | tee "$OUT/machine.txt"

step() {  # step NAME SECONDS CMD...
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS
    echo "===== $name" >>"$OUT/steps.log"
    timeout "$limit" "$@" >"$OUT/$name.tmp" 2>&1
    echo "== $name: exit $? in $((SECONDS - t0)) s"; tail -n 6 "$OUT/$name.tmp"
    cat "$OUT/$name.tmp" >>"$OUT/steps.log"; rm -f "$OUT/$name.tmp"
}
step gpu_tests 150 env CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0} $PY -m pytest tests -m gpu -q -p no:cacheprovider --maxfail=15
[ -n "${SKIP_BENCH:-}${SKIP_KERNELS:-}" ] || step bench_kernels 110 env CLIPSAM_BENCH_MD="$OUT/bench_kernels.md" $PY -m pytest benchmarks/bench_kernels.py -q \
    -p no:cacheprovider --benchmark-enable --benchmark-json="$OUT/bench_kernels.json"
[ -n "${SKIP_BENCH:-}" ] || step bench_scheduler 100 $PY -m pytest benchmarks/bench_scheduler.py -k cuda -q -p no:cacheprovider \
    --benchmark-enable --benchmark-json="$OUT/bench_scheduler.json"
step bench_refine 30 $PY -m pytest benchmarks/bench_refine.py -k cuda -q -p no:cacheprovider \
    --benchmark-enable --benchmark-json="$OUT/bench_refine.json"
[ -n "${SKIP_BENCH:-}" ] || step bench_pipeline 100 $PY -m clipsam.cli bench --device cuda --json "$OUT/bench_pipeline.json" -k \
    "375x500 and (resclip-voc21-torch or naclip-ade20k-torch or clearclip-voc21-torch or naclip-voc21-torch-ms5 or resclip-voc21-torch-sam2)"
step profile 45 $PY benchmarks/profile_cuda.py ${PROFILE:-resclip voc21}
