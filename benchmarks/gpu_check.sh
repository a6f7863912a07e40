#!/usr/bin/env bash
# Every check that needs a GPU, in one command sized for a short lease (about 6 minutes on one H200):
#
#     bash benchmarks/gpu_check.sh OUT_DIR
#
# 1. the GPU tests (estimators on CUDA equal to the CPU's, states offloaded to the CPU and measured on the GPU,
#    a unit whose prompt and response sit on different devices);
# 2. the estimator benchmark's GPU rows (n = 2048, the α = 2 goal);
# 3. benchmarks/bench_gpu.py: batching on a random Janus of Janus-Pro-1B's size in bf16, the bf16 equality of
#    batched rows, and the time of a full T2I-CoReBench image pass.
# Each step has its own time limit and writes into OUT_DIR as it goes, so a step cut short keeps what it did.
# The project is used from src/ (nothing is installed). Wheels under .whl/ (say transformers at the version
# constraints.txt pins, where the machine has another) are installed first, into /tmp/site.
set -uo pipefail
out=${1:-gpu-check}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__,
torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')" 2>&1 | tee "$out/env.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$out/env.txt"

timeout 150 python3 -m pytest -q -rs -p no:cacheprovider tests/test_entropy.py tests/test_hooks.py \
    tests/test_placement.py -k "cuda or gpu" 2>&1 | tee "$out/gpu_tests.txt"
timeout 120 python3 benchmarks/bench_entropy.py --device cuda --sizes 2048 --rounds 1 2>&1 | tee "$out/bench_entropy.txt"
timeout 330 python3 benchmarks/bench_gpu.py --out "$out" 2>&1 | tee "$out/bench_gpu.log"
