#!/usr/bin/env bash
# GPU check, run on a lent NVIDIA machine from the repository root (no venv needed: it uses the
# machine's own CUDA PyTorch and ONNX Runtime). Writes JSON to ${OUT:-gpu-results}/.
#   - FaceNet (InceptionResnetV1, seeded random weights: same graph and cost) exported to ONNX,
#     then the embedding benchmark: bare ONNX Runtime session vs the embedder, CUDA provider,
#     TensorRT where installed;
#   - the same network in PyTorch eager on the GPU (fp32, fp16), for scale;
#   - the GPU-marked tests (they skip where TensorRT is missing).
set -uo pipefail
out="${OUT:-gpu-results}"; mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
python -c "import sys, onnxruntime as o, numpy; print(sys.version.split()[0], 'ort', o.__version__, o.get_available_providers(), 'numpy', numpy.__version__)" | tee -a "$out/gpu.txt"
python -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())" | tee -a "$out/gpu.txt"
python -c "import tensorrt; print('tensorrt', tensorrt.__version__)" 2>&1 | tail -1 | tee -a "$out/gpu.txt"
python -m lookalike_live.bench.embed --models facenet-vggface2 --batches 1 8 32 64 --seconds 2 \
  > "$out/embed_gpu.json" 2> "$out/embed_gpu.log"; echo "bench.embed exit $?"
python - > "$out/torch_gpu.json" 2> "$out/torch_gpu.log" <<'PY'
import json, torch
from lookalike_live.facenet import InceptionResnetV1
torch.manual_seed(0)
net = InceptionResnetV1().eval().cuda()
res = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "rows": []}
for dtype in (torch.float32, torch.float16):
    m = net.to(dtype)
    for b in (1, 8, 32, 64, 256):
        x = torch.randn(b, 3, 160, 160, device="cuda", dtype=dtype)
        with torch.inference_mode():
            for _ in range(5):
                m(x)
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            n = 30
            start.record()
            for _ in range(n):
                m(x)
            end.record(); torch.cuda.synchronize()
        ms = start.elapsed_time(end) / n
        res["rows"].append({"dtype": str(dtype).split(".")[-1], "batch": b, "ms": round(ms, 3),
                            "img_per_s": round(b / ms * 1e3, 1)})
print(json.dumps(res, indent=1))
PY
echo "torch exit $?"
python -m pytest -p no:cacheprovider -q -m gpu tests/test_tensorrt.py tests/test_embed.py > "$out/pytest_gpu.txt" 2>&1; echo "pytest exit $?"
tail -5 "$out/pytest_gpu.txt"
