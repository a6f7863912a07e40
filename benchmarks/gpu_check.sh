#!/usr/bin/env bash
# Every check that needs a GPU, in one command sized for a short lease (its steps' limits add up to 510 s):
#
#     bash benchmarks/gpu_check.sh OUT_DIR
#
# From the session's device tool: command `bash benchmarks/gpu_check.sh $OUT`, timeout_s 600, and carry [".whl"]
# when .whl/ holds wheels (.git/info/exclude keeps it out of git, so it travels only when carried).
#
# 1. the GPU tests (estimators on CUDA equal to the CPU's, states offloaded to the CPU and measured on the GPU,
#    a unit whose prompt and response sit on different devices);
# 2. the estimator benchmark's GPU rows (n = 2048, the α = 2 goal);
# 3. benchmarks/bench_gpu.py: batching on a random Janus of Janus-Pro-1B's size in bf16, the bf16 equality of
#    batched rows, and the time of a full T2I-CoReBench image pass.
# Each step has its own time limit and writes into OUT_DIR as it goes, so a step cut short keeps what it did.
# The project is used from src/ (nothing is installed). Wheels under .whl/ (transformers at the version
# constraints.txt pins, where the machine has another) are installed first, into /tmp/site.
set -uo pipefail
out=${1:-gpu-check}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 -c "import entroprobe.probe, entroprobe.report, pandas, pyarrow, torch, transformers
print('torch', torch.__version__, 'transformers', transformers.__version__,
      torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')" 2>&1 | tee "$out/env.txt" || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$out/env.txt"

timeout 120 python3 -m pytest -q -rs -p no:cacheprovider tests/test_entropy.py tests/test_hooks.py \
    tests/test_placement.py -k "cuda or gpu" 2>&1 | tee "$out/gpu_tests.txt"
timeout 90 python3 benchmarks/bench_entropy.py --device cuda --sizes 2048 --rounds 1 2>&1 | tee "$out/bench_entropy.txt"
python3 -c "from transformers import JanusForConditionalGeneration, JanusImageProcessorPil" 2>&1 \
    | tee -a "$out/env.txt"  # bench_gpu's classes (transformers 5.23 has them: carry .whl where the machine lacks them)
timeout 300 python3 benchmarks/bench_gpu.py --out "$out" 2>&1 | tee "$out/bench_gpu.log"
