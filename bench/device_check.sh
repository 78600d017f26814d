#!/usr/bin/env bash
# Issue 16's checks on a lent GPU machine, as ONE prepared command (bench/RESULTS.md, "gpu" section):
#   1. the `gpu`-marked unit tests (every model-running algorithm on CUDA, a real out-of-memory halving);
#   2. bench/bench_gpu.py: segment_raster and cluster_raster against their bare forwards at 8192 px, the reader
#      threads x read-ahead sweep, and the seed-like ensemble at 4096 px.
# On the device (about 7 minutes there; the wheels of .whl supply smp, faiss, rasterio and shapely):
#   run(command="bash bench/device_check.sh", carry=[".whl"], timeout_s=600)
# then copy the gpu section of $OUT/RESULTS.md into bench/RESULTS.md. Dry run here first (CPU, small sizes):
#   OUT=/tmp/device_check SATSEG_DEVICE_DRY_RUN=1 PYTHON=.venv/bin/python bash bench/device_check.sh
set -u -o pipefail
OUT=${OUT:-/tmp/device_check}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1 && [ -z "${SATSEG_DEVICE_DRY_RUN:-}" ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
if [ -n "${SATSEG_DEVICE_DRY_RUN:-}" ]; then
    export SATSEG_GPU_TESTS_ON_CPU=1
    DEVICE=cpu SIZE=1024 ENSEMBLE_SIZE=512
else
    DEVICE=cuda SIZE=8192 ENSEMBLE_SIZE=4096
fi
(nvidia-smi || true) >"$OUT/nvidia-smi.txt" 2>&1
cp bench/RESULTS.md "$OUT/RESULTS.md"
status=0
timeout 100 "$PY" -m pytest -m gpu tests/unit -q -p no:cacheprovider 2>&1 | tee "$OUT/gpu_tests.log" || status=1
timeout 460 "$PY" bench/bench_gpu.py --device "$DEVICE" --size "$SIZE" --threads-sweep --ensemble \
    --ensemble-size "$ENSEMBLE_SIZE" --out-dir /tmp/bench_gpu --write-results "$OUT/RESULTS.md" \
    --note "bench/device_check.sh; the gpu tests of the same call: $(tail -n 1 "$OUT/gpu_tests.log")" 2>&1 \
    | tee "$OUT/bench_gpu.log" || status=1
cp /tmp/bench_gpu/results.json /tmp/bench_gpu/profile.txt "$OUT/" 2>/dev/null
exit $status
