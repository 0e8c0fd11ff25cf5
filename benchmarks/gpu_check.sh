#!/usr/bin/env bash
# The GPU check, for a session lent a CUDA machine (CONTRIBUTING.md, "On a GPU"): anyloss's
# conformance and torch parity on CuPy, on CUDA torch tensors (ANYLOSS_TORCH_DEVICE=cuda) and on
# JAX's GPU, then benchmarks/bench_gpu.py. Run from the checkout's root, with the wheels of
# anyloss and of what the machine lacks in .whl/ (CONTRIBUTING.md says how to make them);
# writes its logs under $OUT.
set -u
repo="$(pwd)"
out="${OUT:-/tmp/gpu-check}"
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 ANYLOSS_TORCH_DEVICE=cuda
cd /tmp  # not the checkout: its anyloss/ folder is not the installed package
nvidia-smi -L
python3 -m anyloss info > "$out/info.txt" 2>&1
grep -E "^  (numpy|torch|jax|cupy) " "$out/info.txt"

echo "== conformance on cupy, torch (cuda), jax"
timeout 150 python3 -m anyloss conformance --backend cupy --backend torch --backend jax \
    --json "$out/conformance.json" > "$out/conformance.txt" 2>&1
echo "conformance rc=$?"
grep -E "FAIL|PASSED|FAILED|^relative" "$out/conformance.txt" | head -40

echo "== pytest: parity, gradients and the per-backend tests on the GPU libraries"
timeout 170 python3 -m pytest -q -n 16 -p no:cacheprovider --rootdir "$repo" -o addopts="" \
    --junitxml "$out/pytest.xml" \
    "$repo/tests/test_parity.py" "$repo/tests/test_autodiff.py" "$repo/tests/test_losses.py" \
    "$repo/tests/test_classification.py" "$repo/tests/test_margin_embedding.py" \
    "$repo/tests/test_cross_entropy_fast.py" "$repo/tests/test_native_first.py" \
    -k "cupy or torch or jax" > "$out/pytest.txt" 2>&1
echo "pytest rc=$?"
grep -E "^(FAILED|ERROR)" "$out/pytest.txt" | cut -c1-200 | head -40
tail -3 "$out/pytest.txt"

echo "== bench_gpu"
timeout 80 python3 "$repo/benchmarks/bench_gpu.py" --repeat 10 2>&1 | tee "$out/bench.txt"
