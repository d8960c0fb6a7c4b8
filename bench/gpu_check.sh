#!/usr/bin/env bash
# The accelerator check, one command on a machine with JAX and PyTorch installed (TFDS and
# mlxtend not needed): bench/gpu_check.sh OUT_DIR [RECIPE_LENGTH]
#   1. import jax_ae and list jax.devices();
#   2. bench/throughput.py: train.py's step (a lax.scan of 64 steps a call on a GPU) against
#      PyTorch eager on the same device, compile seconds apart from the steady state;
#   3. bench/recipe.py: the lab's full recipe (10 epochs of 60,000 images at batch 64)
#      through train.py on IDX files it writes, once compiling and once from the cache.
# Under 8 minutes on one H100. On a CPU, where the full recipe takes an hour, check it with a
# shorter run: bench/gpu_check.sh OUT_DIR '--steps 20'.
# Results: OUT_DIR/{devices.txt,throughput.json,recipe.json,log.txt}.
set -euo pipefail
mkdir -p "${1:?usage: bench/gpu_check.sh OUT_DIR [RECIPE_LENGTH]}"
out=$(realpath "$1")
length=${2:---epochs 10}
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1  # runs uninstalled
python3 -c 'import jax, jax_ae; print("jax", jax.__version__, jax.devices())' \
  2>&1 | tee "$out/devices.txt"
python3 bench/throughput.py --rounds 3 --seconds 1 --out "$out/throughput.json" >/dev/null \
  2> >(tee -a "$out/log.txt" >&2)
# shellcheck disable=SC2086  # the length is two words
python3 bench/recipe.py $length --out "$out/recipe.json" >/dev/null 2> >(tee -a "$out/log.txt" >&2)
echo "wrote $out" >&2
