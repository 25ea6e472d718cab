#!/usr/bin/env bash
# `protogen verify --zoo --providers cpu,cuda` on this workplace's GPU machine, which has
# python3 with CUDA torch, onnx and onnxruntime but no network: the wheels it lacks (protobuf >=
# 7.35.1 for the generated caffe_pb2.py; OpenCV < 5 for the Caffe importer) travel in
# .gpu_wheels/ (ignored by git). Usage there: bash scripts/device_verify.sh  (results in $OUT)
set -uo pipefail
OUT="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUT"
SITE=/tmp/protogen-site
python3 -m pip install -q --no-deps --no-index --target "$SITE" .gpu_wheels/*.whl 2>&1 | tail -2
export PYTHONPATH="$SITE:$PWD" PYTHONUNBUFFERED=1
python3 - <<'PY' | tee "$OUT/env.txt"
import torch, onnxruntime as ort, cv2, onnx, numpy, google.protobuf as pb
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
print("onnxruntime", ort.__version__, ort.get_available_providers())
print("opencv", cv2.__version__, "onnx", onnx.__version__, "numpy", numpy.__version__, "protobuf", pb.__version__)
PY
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee -a "$OUT/env.txt"
timeout "${LIMIT:-400}" python3 -m protogen verify --zoo --providers cpu,cuda --json \
    --report "$OUT/verify_zoo.md" > "$OUT/verify_zoo.json" 2> "$OUT/verify_zoo.stderr"
rc=$?
echo "exit $rc" | tee "$OUT/status"
tail -n 40 "$OUT/verify_zoo.stderr"
exit $rc
