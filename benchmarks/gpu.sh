#!/usr/bin/env bash
# Accelerator benchmarks, prepared for whoever has a GPU (or TPU): the logistic-regression, IWAE
# and VAE step benchmarks (vijax vs hand-written JAX vs NumPyro) and the population benchmark
# (64 runs in one vj.fit_population program vs 64 sequential vj.fit calls: a Normal mean,
# a logistic regression, a learning-rate sweep, small VAEs on digits) on the accelerator
# JAX finds. A few minutes on one GPU. Results: benchmarks/results/gpu/<name>.{json,md} and
# devices.txt (what ran them). Each benchmark is limited to LIMIT_SECONDS (default 1200).
#
#   benchmarks/gpu.sh                 # needs a JAX with an accelerator plugin (jax[cuda12])
#   PYTHON=python3 benchmarks/gpu.sh  # another interpreter than .venv/bin/python
#   ALLOW_CPU=1 benchmarks/gpu.sh     # run anyway on the CPU (to try the script itself)
#   BENCHMARKS=scaling OUT=/tmp/x benchmarks/gpu.sh   # a subset, elsewhere
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-.venv/bin/python}"
OUT="${OUT:-benchmarks/results/gpu}"
LIMIT="${LIMIT_SECONDS:-1200}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # take GPU memory as needed, not 75% up front
# The population benchmark, shortened to a few minutes on one GPU: 2 repeats, a fifth of the
# CPU run's steps per population (1000 / 400 / 200 / 40), a learning-rate sweep of 8 runs
# (each sequential run compiles its own program). Set them to 3, 1 and 16 for the CPU run's sizes.
export SCALING_REPEATS="${SCALING_REPEATS:-2}"
export SCALING_STEPS_FRACTION="${SCALING_STEPS_FRACTION:-0.2}"
export SCALING_SWEEP_RUNS="${SCALING_SWEEP_RUNS:-8}"

echo "== devices"
devices=$(
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  fi
  "$PYTHON" -c 'import jax; print("jax", jax.__version__, "backend", jax.default_backend()); print(jax.devices())'
)
echo "$devices"
if echo "$devices" | grep -q "backend cpu$" && [ "${ALLOW_CPU:-0}" != "1" ]; then
  echo "no accelerator: JAX's backend is cpu (install e.g. 'jax[cuda12]'; ALLOW_CPU=1 runs anyway)" >&2
  exit 1
fi
mkdir -p "$OUT"
echo "$devices" > "$OUT/devices.txt"

# One benchmark per process: write_results reads harness.RESULTS_DIR when it is called.
run_one='
import importlib, sys
from pathlib import Path
from benchmarks import harness
name, out = sys.argv[1], Path(sys.argv[2])
harness.RESULTS_DIR = out
module = importlib.import_module(f"benchmarks.{name}")
print(harness.write_results(module.NAME, module.run()), flush=True)
'
for name in ${BENCHMARKS:-logreg iwae vae scaling}; do
  if [ ! -f "benchmarks/$name.py" ]; then
    echo "== $name: no benchmarks/$name.py here, skipped"
    continue
  fi
  echo "== $name"
  timeout "$LIMIT" "$PYTHON" -c "$run_one" "$name" "$OUT"
done
echo "== written to $OUT"
