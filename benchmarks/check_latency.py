"""Whole-process time of ``bdl check`` on a 50-line model (target: <= 0.3 s).

Prints one table (rows: ``check_50_lines``, ``python_startup``; column ``s``, the median
over ``--repeats`` runs) and writes it with ``--json OUT``. The Python start-up row is
the floor any Python CLI pays on this machine, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def fifty_line_model() -> str:
    lines = ["# a 50-line hierarchical regression", "model Big(x: real[N, D], y: real[N], "
             "g: int[N]) {", "  mu ~ Normal(0, 5)", "  tau ~ HalfNormal(2)"]
    for k in range(20):
        lines.append(f"  b{k}: real[D] ~ Normal(mu, tau)")
        lines.append(f"  e{k} = x @ b{k}")
    lines += ["  sigma ~ HalfNormal(1)", "  a: real[G] ~ Normal(0, 1)",
              "  plate N {", "    y ~ Normal(e0 + e19 + a[g], sigma)", "  }", "}"]
    lines.insert(2, "  # G groups")
    return "\n".join(lines).replace("g: int[N]) {", "g: int<lower=0>[N], G: int) {") + "\n"


def timed(cmd: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "big.bdl"
        path.write_text(fifty_line_model())
        n_lines = len(path.read_text().splitlines())
        table = {
            "check_50_lines": {"s": timed([sys.executable, "-m", "ppl.cli", "check", "-q",
                                           str(path)], args.repeats)},
            "python_startup": {"s": timed([sys.executable, "-c", "pass"], args.repeats)},
        }
    print(f"bdl check, whole process, {n_lines}-line model (median of {args.repeats})")
    print(f"{'':<16} {'s':>8}")
    for row, cols in table.items():
        print(f"{row:<16} {cols['s']:>8.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    main()
