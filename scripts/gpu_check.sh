#!/usr/bin/env bash
# What a lent GPU is for (docs/gpu-check.md), as one command within the device tool's limits:
#   1. `calibrate device_kind=cuda` at Wan2.1 T2V-14B's and T2V-1.3B's 480p shapes: the board's own
#      kernel fractions (GEMMs, attention, convolutions, element-wise rules, the host's launch cost);
#   2. `report` with that calibration against the catalog's figures;
#   3. a real CUDA trace: `profile profile.device_kind=cuda` (diffusers' DiT, random weights, its
#      first 2 blocks at the full sequence), re-read by `ingest` against the prediction.
# It writes at most 8 files straight under $OUT (the device tool's folder; tmp/gpu-check here);
# the run folders they come from are in a temporary folder, removed on exit. GPU_CHECK_KIND=cpu
# runs the same steps on a CPU at a tiny workload (a dry run of the script, not a measurement).
# About 3 minutes on an H100 is expected (not yet run on one); the timeout leaves device time
# for a second try within the session's 15 minutes.
#   here:   scripts/gpu_wheels.sh
#   there:  run(command="bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=300)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-tmp/gpu-check}"
mkdir -p "$OUT"
RUNS=$(mktemp -d)  # the run folders, outside $OUT: only the files copied there come back
trap 'rm -rf "$RUNS"' EXIT
exec > >(tee "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1
if [ -d .whl ] && [ -z "${PY:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD"
fi
PY="${PY:-python3}"
KIND="${GPU_CHECK_KIND:-cuda}"

if [ "$KIND" = cuda ]; then
  gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
  case "$gpu" in  # the boards the catalog holds by their exact names; any other needs its name
    "NVIDIA H100 80GB HBM3") DEVICE=h100-sxm ;;
    "NVIDIA H100 PCIe") DEVICE=h100-pcie ;;
    "NVIDIA H200") DEVICE=h200 ;;
    *) DEVICE="" ;;
  esac
  DEVICE="${GPU_CHECK_DEVICE:-$DEVICE}"
  if [ -z "$DEVICE" ]; then
    echo "no catalog board is named '$gpu': give GPU_CHECK_DEVICE=NAME (configs/device/)"
    exit 2
  fi
  nvidia-smi -q >"$OUT/nvidia-smi.txt"
  MODEL=(model=wan2.1-t2v-14b workload=480p-81f)
  ON=(device="$DEVICE")
  CAL=(device_kind=cuda device="$DEVICE" calibrate.max_flops=2.0e12 calibrate.min_run_time=0.1)
else
  MODEL=(model=wan2.1-t2v-1.3b workload=w001-tiny)
  ON=(device=h100-sxm)
  CAL=(device_kind=cpu)
fi
echo "board: ${gpu:-none} as ${DEVICE:-none}"
"$PY" -c 'import torch, platform; print("torch", torch.__version__, "python", platform.python_version(),
  "cuda", torch.cuda.is_available() and torch.cuda.get_device_name(0))'

echo "== 1. calibrate (${CAL[*]})"
"$PY" -m ditmeter calibrate "${MODEL[@]}" "${CAL[@]}" calibrate.output="$OUT/calibration.yaml" output_root="$RUNS"
if [ "$KIND" = cuda ]; then  # the 1.3B's smaller GEMMs and attention (docs/eager.md, small kernels)
  "$PY" -m ditmeter calibrate model=wan2.1-t2v-1.3b workload=480p-81f "${CAL[@]}" \
    calibrate.output="$OUT/calibration-1.3b.yaml" output_root="$RUNS"
fi

echo "== 2. report: the catalog's figures, then the calibration's"
"$PY" -m ditmeter report "${MODEL[@]}" "${ON[@]}" output_root="$RUNS" run_id=catalog >"$RUNS/catalog.txt"
"$PY" -m ditmeter report "${MODEL[@]}" calibration="$OUT/calibration.yaml" output_root="$RUNS" \
  run_id=calibrated >"$RUNS/calibrated.txt"
grep -h -E "per video|per forward" "$RUNS/catalog.txt" "$RUNS/calibrated.txt" || true

echo "== 3. profile (2 blocks, random weights) and ingest its trace"
"$PY" -m ditmeter profile "${MODEL[@]}" "${ON[@]}" pipeline=diffusers profile.device_kind="$KIND" \
  profile.num_layers=2 output_root="$RUNS" run_id=profile
trace=$(find "$RUNS/profile" -name trace.json | head -1)
gzip -c "$trace" >"$OUT/trace.json.gz"
"$PY" -m ditmeter ingest trace="$OUT/trace.json.gz" "${MODEL[@]}" "${ON[@]}" pipeline=diffusers \
  model.num_layers=2 output_root="$RUNS" run_id=ingest
cp "$(find "$RUNS/profile" -name summary.md | head -1)" "$OUT/profile-summary.md"
cp "$(find "$RUNS/ingest" -name summary.md | head -1)" "$OUT/ingest-summary.md"
ls -l "$OUT"
