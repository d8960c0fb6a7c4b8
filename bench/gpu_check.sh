#!/usr/bin/env bash
# The accelerator check, one command on a machine with JAX, Flax, Optax, Orbax, tqdm and
# PyTorch installed (TFDS, mlxtend and the internet not needed):
# bench/gpu_check.sh OUT_DIR [RECIPE_LENGTH]
#   1. import jax_ae and torch, list jax.devices() and torch's CUDA device;
#   2. bench/throughput.py: train.py's step (a lax.scan of 64 steps a call on a GPU) against
#      PyTorch eager and torch.compile's 'max-autotune' and 'reduce-overhead' (CUDA graphs)
#      on the same device, TF32 on both sides, compile seconds apart from the steady state
#      (a mode that fails is reported with its error and the others go on);
#   3. bench/recipe.py: the lab's full recipe (10 epochs of 60,000 images at batch 64)
#      through train.py on random IDX files it writes, once compiling and once from the cache.
# The recipe took 45 s on one H200 (results/bench/gpu_h200_recipe.json); torch.compile's
# max-autotune compiles for a minute or more a batch size, its first steps timed apart. On
# a CPU, where the full recipe takes an hour, check it with a shorter run:
# bench/gpu_check.sh OUT_DIR '--steps 20' (there torch.compile runs Inductor's default mode).
# Results: OUT_DIR/{devices.txt,throughput.json,recipe.json,log.txt}.
set -euo pipefail
mkdir -p "${1:?usage: bench/gpu_check.sh OUT_DIR [RECIPE_LENGTH]}"
out=$(realpath "$1")
length=${2:---epochs 10}
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1  # runs uninstalled
python3 -c 'import flax, optax, orbax.checkpoint, tqdm, torch' || {
  echo "gpu_check.sh needs jax, flax, optax, orbax-checkpoint, tqdm and torch" >&2; exit 1; }
python3 -c 'import jax, jax_ae, torch; print("jax", jax.__version__, jax.devices()); print(
  "torch", torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())' \
  2>&1 | tee "$out/devices.txt"
python3 bench/throughput.py --rounds 3 --seconds 1 --out "$out/throughput.json" >/dev/null \
  2> >(tee -a "$out/log.txt" >&2)
# shellcheck disable=SC2086  # the length is two words
python3 bench/recipe.py $length --out "$out/recipe.json" >/dev/null 2> >(tee -a "$out/log.txt" >&2)
echo "wrote $out" >&2
