#!/usr/bin/env bash
# GPU check (issue 9): the device-parametrised tests on CUDA, then CPU-vs-CUDA timings of
# the compiled core models and of every construct's benchmark at a small budget; the
# tables are also written to gpu_check_results.txt (and gpu_*.json).
# Run from the repository root on a machine with CUDA (under 8 minutes on one H100).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/gpu_check_results.txt}
{
  echo "# gpu_check $(date -u +%FT%TZ)"
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
  echo "## device-parametrised tests (cpu and cuda)"
  python -m pytest -q -k "device" tests/ 2>&1 | tail -5
  echo "## CPU vs CUDA timings"
  python benchmarks/gpu_speed.py --size 4000 --steps 100 --json benchmarks/gpu_speed.json
  echo "## constructs: CPU vs CUDA wall time per benchmark (small budgets)"
  python benchmarks/gpu_constructs.py --scale ${SCALE:-1} --json benchmarks/gpu_constructs.json
} 2>&1 | tee "$OUT"
