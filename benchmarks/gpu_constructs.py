"""CPU vs CUDA wall time of every construct's benchmark at a small budget (issue 9).

Each construct benchmark runs as its own process, first with ``--device cpu`` and then with
``--device cuda``, with the same arguments and seed; the table has one row per benchmark
and the columns ``cpu_s``, ``cuda_s``, ``speedup`` (cpu_s / cuda_s). Process start-up and
imports are in both times alike. Without CUDA only the CPU column is filled. ``--scale``
multiplies the budgets (the size knob); ``--json OUT`` writes the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("BDL_DATA", ROOT.parent / "shared" / "data"))


def runs(scale: float, tmp: Path) -> dict[str, list[str]]:
    """Benchmark name -> its arguments (without --device), budgets multiplied by scale."""

    def n(k: int) -> str:
        return str(max(1, round(k * scale)))

    uci = DATA / "uci" / "yacht"
    out = {
        "toy1d": ["toy1d.py", "--size", "tiny", "--priors", "fg,gpig", "--w1-steps", "100",
                  "--curve-points", "2"],
        "prior_fit_speed": ["prior_fit_speed.py", "--steps", n(5), "--warm-steps", "5",
                            "--w1-steps", "100", "--eval-sets", "2"],
        "fbm_sampling": ["fbm_sampling.py", "--paths", n(200), "--repeats", "1",
                         "--chol-max", "2000"],
        "fbm_bridge": ["fbm_bridge.py", "--steps", n(100), "--paths", "32",
                       "--eval-paths", "500", "--log-every", "0",
                       "--png", str(tmp / "bridge.png")],
        "fsde_hurst": ["fsde_hurst.py", "--synthetic", "--hs", "0.7", "--steps", n(40),
                       "--paths", "8", "--seeds", "1"],
        "np_gp": ["np_gp.py", "--models", "cnp,np,anp,mpnp", "--eval-kernels", "rbf",
                  "--steps", n(100), "--eval-tasks", "20", "--samples", "10"],
        "fewshot": ["fewshot.py", "--task", "sine_line", "--methods", "niw,maml1",
                    "--episodes", n(200), "--test-episodes", "50"],
        "mdbm_digits": ["mdbm_digits.py", "--epochs", "1", "--train", n(256), "--test", "64",
                        "--fractions", "0.4"],
    }
    if uci.exists():
        out["uci_bnn"] = ["uci_bnn.py", "--data", str(uci), "--priors", "fg,gpig",
                          "--budget", "small"]
    return out


def wall(args: list[str], device: str, timeout: float | None = None) -> float:
    """Seconds for one benchmark process on ``device``; raises with its stderr on failure
    or when it runs past ``timeout`` seconds."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / args[0]), *args[1:], "--device", device]
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{' '.join(cmd)} ran past {timeout:.0f} s") from None
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scale", type=float, default=1.0, help="budget multiplier")
    ap.add_argument("--only", default="", help="comma list of benchmark names")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds allowed to each benchmark process")
    ap.add_argument("--json", default=None, help="written after every row")
    args = ap.parse_args()
    import torch

    cuda = torch.cuda.is_available()
    table: dict[str, dict[str, float]] = {}
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        todo = runs(args.scale, Path(tmp))
        if args.only:
            todo = {k: v for k, v in todo.items() if k in args.only.split(",")}
        print(f"{'benchmark':<16} {'cpu_s':>8} {'cuda_s':>8} {'speedup':>8}", flush=True)
        for name, bench in todo.items():
            row: dict[str, float] = {}
            try:
                row["cpu_s"] = wall(bench, "cpu", args.timeout)
                if cuda:
                    row["cuda_s"] = wall(bench, "cuda", args.timeout)
                    row["speedup"] = row["cpu_s"] / row["cuda_s"]
            except RuntimeError as err:
                print(f"{name:<16} failed: {err}", file=sys.stderr, flush=True)
                failed.append(name)
            table[name] = row
            cells = [f"{row[c]:8.2f}" if c in row else f"{'-':>8}"
                     for c in ("cpu_s", "cuda_s", "speedup")]
            print(f"{name:<16} {' '.join(cells)}", flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps(table, indent=2))
    if failed:
        sys.exit(f"gpu_constructs: failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
