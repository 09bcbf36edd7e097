"""CPU vs CUDA time of the compiled models: ms per SVI step and per NUTS draw.

One table, rows ``MODEL/METHOD``, columns ``cpu_ms``, ``cuda_ms``, ``speedup``
(cpu/cuda; empty when CUDA is absent). ``--size`` scales the data (N points) so the
GPU has work to do; ``--json OUT`` writes the table. Both devices run in this process,
alternating, so the ratio is meaningful on a noisy machine.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

import ppl

MLP = """\
model MLPRegression(x: real[N, 1], y: real[N]) {
  f = mlp(1, [50, 50], 1, act=tanh)
  sigma ~ HalfNormal(1)
  y ~ Normal(f(x)[:, 0], sigma)
}
"""
GP = """\
model GP(x: real[N], y: real[N]) {
  lengthscale ~ LogNormal(0, 1)
  noise ~ HalfNormal(1)
  y ~ MultivariateNormal(zeros(N), covariance_matrix=gram(rbf(lengthscale=lengthscale), x)
                         + noise^2 * eye(N))
}
"""
LOGREG = """\
model LogReg(x: real[N, D], y: int[N]) {
  w: real[D] ~ Normal(0, 1)
  b ~ Normal(0, 5)
  plate N batch 256 {
    y ~ Bernoulli(logits=x @ w + b)
  }
}
"""


def data_for(name: str, n: int, rng) -> dict:
    if name == "gp":
        x = rng.uniform(-3, 3, n)
        return {"x": x, "y": np.sin(x) + 0.1 * rng.normal(size=n)}
    if name == "mlp":
        x = rng.uniform(-3, 3, (n, 1))
        return {"x": x, "y": np.sin(x[:, 0]) + 0.1 * rng.normal(size=n)}
    x = rng.normal(size=(n, 20))
    return {"x": x, "y": (x[:, 0] + rng.logistic(size=n) > 0).astype(int)}


def time_fit(m, data, method: str, device: str, steps: int) -> float:
    if method == "svi":
        t = time.perf_counter()
        m.fit(data, infer="svi", steps=steps, samples=2, device=device, dtype="float32")
        return 1e3 * (time.perf_counter() - t) / steps
    t = time.perf_counter()
    m.fit(data, infer="nuts", samples=steps, warmup=steps, chains=1, device=device)
    return 1e3 * (time.perf_counter() - t) / (2 * steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=2000, help="data points per model")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--json")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    cuda = torch.cuda.is_available()
    cases = [("mlp", MLP, "svi"), ("gp", GP, "svi"), ("logreg", LOGREG, "svi"),
             ("gp", GP, "nuts")]
    table: dict[str, dict[str, float]] = {}
    for name, src, method in cases:
        m = ppl.compile(src, f"<{name}>")
        n = min(args.size, 1000) if name == "gp" else args.size
        data = data_for(name, n, rng)
        steps = args.steps if method == "svi" else max(10, args.steps // 5)
        cpu = time_fit(m, data, method, "cpu", steps)
        gpu = time_fit(m, data, method, "cuda", steps) if cuda else math.nan
        table[f"{name}/{method}"] = {"cpu_ms": cpu, "cuda_ms": gpu,
                                     "speedup": cpu / gpu if cuda else math.nan}
    dev = torch.cuda.get_device_name(0) if cuda else "no CUDA"
    print(f"ms per step (SVI) or per draw (NUTS), N={args.size}; GPU: {dev}")
    print(f"{'':<12} {'cpu_ms':>10} {'cuda_ms':>10} {'speedup':>8}")
    for row, c in table.items():
        print(f"{row:<12} {c['cpu_ms']:>10.2f} {c['cuda_ms']:>10.2f} {c['speedup']:>8.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    main()
