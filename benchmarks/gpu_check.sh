#!/usr/bin/env bash
# GPU check (issue 9): the device-parametrised tests on CUDA, then CPU-vs-CUDA timings of
# the compiled core models (eager and --backend pyro-compiled) and of every construct's
# benchmark at a small budget. Everything goes to OUTDIR (default benchmarks/):
# gpu_check_results.txt (the whole log, written as it runs, ending with each part's exit
# status), gpu_speed.json, gpu_constructs.json and gpu_tests.log (the tests' full output).
# Each part has its own time limit (120 + 150 + 420 s at worst), so one slow part cannot
# take the others' time; measured parts add up to about 7.5 minutes on one H100 (most of
# it the CPU side of the construct table). The script exits non-zero if any part failed
# or ran out of time. SCALE multiplies the construct budgets, PYTHON names the interpreter.
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${1:-benchmarks}
mkdir -p "$OUTDIR"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
LOG="$OUTDIR/gpu_check_results.txt"
: > "$LOG"
status=0
part() {  # part NAME COMMAND...: run it, log its output and exit status
  local name=$1 rc
  shift
  echo "## $name" | tee -a "$LOG"
  "$@" 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  echo "[$name: exit $rc]" | tee -a "$LOG"
  [ "$rc" -eq 0 ] || status=1
}
{
  echo "# gpu_check $(date -u +%FT%TZ)"
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
  echo "cores: $(nproc)"
} 2>&1 | tee -a "$LOG"
part "device-parametrised tests (cpu and cuda)" bash -c "timeout 120 $PY -m pytest \
  -o addopts='' -q -rs --tb=short -k device tests/ > '$OUTDIR/gpu_tests.log' 2>&1; \
  rc=\$?; tail -15 '$OUTDIR/gpu_tests.log'; exit \$rc"
part "CPU vs CUDA timings of the core models" timeout 150 $PY benchmarks/gpu_speed.py \
  --size 4000 --steps 100 --json "$OUTDIR/gpu_speed.json"
part "constructs: CPU vs CUDA wall time per benchmark (small budgets)" timeout 420 \
  $PY benchmarks/gpu_constructs.py --scale "${SCALE:-1}" --timeout 90 \
  --json "$OUTDIR/gpu_constructs.json"
exit $status
