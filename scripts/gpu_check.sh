#!/usr/bin/env bash
# GPU check for `protogen verify`: ONNX Runtime CUDA and PyTorch CUDA (TF32 off) against the
# PyTorch CPU reference, ORT CPU and OpenCV, on every zoo model.
#
# For a fresh, bare machine with an NVIDIA GPU, Python >= 3.10 and access to PyPI. Run from
# anywhere:   OUT=/some/dir bash scripts/gpu_check.sh
# Writes to $OUT: gpu_check.log, env.txt, verify_zoo.json, verify_zoo.md, status (exit code).
# Exit status: that of `protogen verify --zoo` (0 all pass, 1 a check failed, 2 error),
# or 3 when the CUDA provider is not usable (so a CPU-only fallback never passes silently).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$ROOT/gpu_out}"
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
PY="${PYTHON:-python3}"
VENV="${VENV:-${TMPDIR:-/tmp}/protogen-gpu-venv}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

step() { echo "== $(date +%H:%M:%S) $*"; }
fail() { echo "gpu_check: $*"; echo "${2:-2}" > "$OUT/status"; exit "${2:-2}"; }

step "machine"
nvidia-smi || echo "(nvidia-smi not found)"
"$PY" --version || fail "no $PY"

step "venv at $VENV"
"$PY" -m venv "$VENV" || fail "cannot create a venv (python3-venv missing?)"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip wheel || fail "pip upgrade failed"

# torch from PyPI ships CUDA 12 builds on Linux x86_64 (with the nvidia-* runtime wheels);
# onnxruntime-gpu (CUDA 12) finds cuDNN/cuBLAS in those wheels (ort.preload_dlls()).
# The project is installed --no-deps so the CPU-only `onnxruntime` wheel never shadows
# onnxruntime-gpu (both provide the `onnxruntime` module). OpenCV < 5 keeps the Caffe importer.
step "install (torch, onnxruntime-gpu, project)"
python -m pip install -q torch onnxruntime-gpu "onnx>=1.16" "numpy>=1.24" "jinja2>=3.1" \
    "protobuf>=7.35.1" "opencv-python-headless>=4.8,<5" || fail "pip install failed"
python -m pip install -q --no-deps -e "$ROOT" || fail "installing protogen failed"

step "environment"
python - <<'PY' | tee "$OUT/env.txt"
import onnxruntime as ort, torch, cv2, numpy, onnx
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
print("onnxruntime", ort.__version__, ort.get_available_providers())
print("onnx", onnx.__version__, "numpy", numpy.__version__, "opencv", cv2.__version__)
PY
python - <<'PY' || fail "CUDA is not usable from torch and onnxruntime" 3
import torch, onnxruntime as ort
assert torch.cuda.is_available(), "torch.cuda.is_available() is False"
assert "CUDAExecutionProvider" in ort.get_available_providers(), ort.get_available_providers()
PY

step "protogen verify --zoo --providers cpu,cuda"
# TF32 is switched off on both sides by protogen (use_tf32=0; allow_tf32=False)
protogen verify --zoo --providers cpu,cuda --json --report "$OUT/verify_zoo.md" > "$OUT/verify_zoo.json"
rc=$?
python - "$OUT/verify_zoo.json" <<'PY' || true
import json, sys
rs = json.load(open(sys.argv[1]))
for r in rs:
    cells = []
    for rt in r["runtimes"]:
        cs = [c["max_rel"] for c in r["comparisons"] if c["runtime"] == rt["name"]]
        cells.append(f'{rt["name"]}={rt["status"]}' + (f'({max(float(c) for c in cs):.2e})' if cs else ""))
    print(f'{r["model"]:<22} {"PASS" if r["ok"] else "FAIL"}  ' + " ".join(cells))
PY
echo "$rc" > "$OUT/status"
step "done: exit $rc"
exit "$rc"
