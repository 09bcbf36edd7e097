"""CPU vs CUDA time of the compiled models: ms per SVI step and per NUTS draw.

One table, rows ``MODEL/METHOD``, columns ``cpu_ms``, ``cuda_ms``, ``speedup``
(cpu/cuda), ``cuda_jit_ms`` (CUDA with ``--backend pyro-compiled``, i.e. ``jit=True``:
JitTrace_ELBO for SVI, a JIT-compiled potential for NUTS) and ``jit_speedup``
(cpu/cuda_jit); the CUDA columns are NaN when CUDA is absent. ``--size`` scales the data
(N points) so the GPU has work to do; ``--json OUT`` writes the table. Both devices run in
this process, one after the other; each time is a difference of two fits, so per-fit costs
(the device's start-up, the JIT trace each compiled fit builds) are not counted. SVI runs
in float32, NUTS in float64 (the methods' defaults, docs/language.md). NUTS draws differ
in tree depth between devices (different random streams), so its column is per draw, not
per leapfrog step.
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


def time_fit(m, data, method: str, device: str, steps: int, jit: bool = False) -> float:
    """Milliseconds per SVI step or per NUTS draw (warm-up draws included), as the
    difference of a (k + steps)-step fit and a k-step fit (k = 5) over ``steps``: what a fit
    costs once (CUDA context, first kernel launches, the JIT trace that every ``jit`` fit
    builds anew, guide set-up, the final draws) cancels."""
    if method == "svi":
        def run(k: int) -> None:
            m.fit(data, infer="svi", steps=k, samples=2, device=device, dtype="float32",
                  jit=jit)
    else:
        def run(k: int) -> None:
            m.fit(data, infer="nuts", samples=k, warmup=k, chains=1, device=device, jit=jit)
    k = 5
    run(k)  # the first fit on a device also pays the device's own start-up
    t = time.perf_counter()
    run(k)
    short = time.perf_counter() - t
    t = time.perf_counter()
    run(k + steps)
    long = time.perf_counter() - t
    per = steps if method == "svi" else 2 * steps
    return 1e3 * max(long - short, 0.0) / per


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
        steps = args.steps if method == "svi" else max(10, args.steps // 10)
        cpu = time_fit(m, data, method, "cpu", steps)
        gpu = time_fit(m, data, method, "cuda", steps) if cuda else math.nan
        jit = time_fit(m, data, method, "cuda", steps, jit=True) if cuda else math.nan
        table[f"{name}/{method}"] = {"cpu_ms": cpu, "cuda_ms": gpu, "speedup": cpu / gpu,
                                     "cuda_jit_ms": jit, "jit_speedup": cpu / jit}
    dev = torch.cuda.get_device_name(0) if cuda else "no CUDA"
    print(f"ms per step (SVI, float32) or per draw (NUTS, float64), N={args.size}; GPU: {dev}")
    cols = ("cpu_ms", "cuda_ms", "speedup", "cuda_jit_ms", "jit_speedup")
    print(f"{'':<12} " + " ".join(f"{c:>11}" for c in cols))
    for row, c in table.items():
        print(f"{row:<12} " + " ".join(f"{c[k]:>11.2f}" for k in cols))
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    main()
