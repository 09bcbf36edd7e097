"""Time and error of MA-fBM path sampling against exact fBM (issue 5; METHODS.md s2 (b)).

    python benchmarks/fbm_sampling.py [--T 100,300,1000,2000,5000,10000] [--paths 1000]
                                      [--H 0.7] [--device cpu|cuda] [--json OUT]

On the grid t_k = k / T (k = 1..T) of [0, 1]:

* ``mafbm``: type II MA-fBM (``ppl.runtime.mafbm.sample_mafbm``: exact OU transitions,
  summed by a blocked scan, O(T K^2) per path) at the smallest K whose relative error
  eps (METHODS.md s2) is <= ``--eps`` on gamma in [1/20, 20];
* ``cholesky``: exact type II fBM, the covariance (closed form with 2F1) and its Cholesky
  factor, O(T^3) once per H, then O(T^2) per path;
* ``davies_harte``: exact fBM by circulant embedding, O(T log T) per path. It needs
  stationary increments, so it samples type I (Mandelbrot-van Ness); its error is against
  the type I variance.

Columns: ``total_s`` (a fresh batch of ``--paths`` paths at a new H, set-up included: in
the method H changes at every step), ``ms_per_path`` (the marginal cost of one more path,
set-up excluded), ``one_path_s`` (one path at a new H), ``var1_rel_err`` (|empirical
Var B(1) - exact| / exact over the batch) with its Monte Carlo standard error
``var1_mc_se`` = sqrt(2 / (paths - 1)), ``var_bias_max`` (exact, no sampling: the largest
relative error of the method's own variance against the exact fBM variance on
t in [0.1, 1]; zero for the exact samplers), and ``speedup_batch`` / ``speedup_one``
(Cholesky's time over the method's, same T). Rows ``slope/<method>``: the fitted
log-log slope of ``total_s`` and of ``one_path_s`` against T (1 = linear).
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from ppl.runtime import mafbm


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn, dev: torch.device, repeats: int):
    """Best wall time of ``repeats`` calls and the last result."""
    best, out = math.inf, None
    for _ in range(repeats):
        _sync(dev)
        t0 = time.perf_counter()
        out = fn()
        _sync(dev)
        best = min(best, time.perf_counter() - t0)
    return best, out


def smallest_K(H: float, eps: float, kind: int = 2, k_max: int = 20) -> tuple[int, float]:
    """The smallest K with MA-fBM relative error <= eps (T = 1, gamma in [1/20, 20])."""
    for K in range(1, k_max + 1):
        e = float(mafbm.omega(H, mafbm.gamma_grid(K), 1.0, kind)[1])
        if e <= eps:
            return K, e
    raise ValueError(f"no K <= {k_max} reaches eps <= {eps} at H = {H}")


def var_error(x: torch.Tensor, exact_var1: float) -> tuple[float, float]:
    v = float(x[:, -1].double().var())
    return abs(v - exact_var1) / exact_var1, math.sqrt(2.0 / (x.shape[0] - 1))


def add_run_args(ap: argparse.ArgumentParser) -> None:
    """--device, --threads and --json, shared by the issue 5 benchmarks."""
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="write {row: {column: number}} here")


def setup_run(ap: argparse.ArgumentParser, args) -> torch.device:
    """Check the device (a clear error when CUDA is asked for and absent), set threads."""
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda requested but CUDA is not available")
    torch.set_num_threads(args.threads)
    return torch.device(args.device)


def report(rows: dict, cols: list[str], json_path: str | None) -> None:
    """Print the markdown table (a missing cell as '–') and write ``rows`` as JSON."""
    print("| row | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for k, r in rows.items():
        print(f"| {k} | " + " | ".join(f"{r[c]:.4g}" if c in r else "–" for c in cols) + " |")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(rows, f, indent=2)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--T", default="100,300,1000,2000,5000,10000", help="grid sizes")
    ap.add_argument("--paths", type=int, default=1000, help="paths per batch (size knob)")
    ap.add_argument("--H", type=float, default=0.7)
    ap.add_argument("--eps", type=float, default=1e-2, help="MA-fBM error to reach")
    ap.add_argument("--chol-max", type=int, default=5000,
                    help="largest T for Cholesky (O(T^2) memory, O(T^3) time)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"],
                    help="MA-fBM noise and scan dtype (the exact samplers use float64)")
    add_run_args(ap)
    args = ap.parse_args(argv)
    dev = setup_run(ap, args)
    dtype = getattr(torch, args.dtype)
    H, P = args.H, args.paths
    K, eps = smallest_K(H, args.eps)
    print(f"H = {H}, type II, K = {K} (eps = {eps:.2e} <= {args.eps}), {P} paths, "
          f"device {dev}, {torch.get_num_threads()} thread(s)", flush=True)
    g = mafbm.gamma_grid(K)
    w, _ = mafbm.omega(H, g, 1.0, 2)
    # first calls pay for imports (scipy.special) and kernel set-up: not part of the cost
    tw = torch.arange(1, 51, dtype=torch.float64, device=dev) / 50
    mafbm.sample_mafbm(tw, H, 2, K=K, dtype=dtype)
    mafbm.sample_fbm_davies_harte(50, H, 2, device=dev)
    torch.linalg.cholesky(mafbm.fbm_cov(tw, H, 2))
    rows: dict[str, dict] = {}
    Ts = [int(s) for s in args.T.split(",")]
    for T in Ts:
        t = torch.arange(1, T + 1, dtype=torch.float64, device=dev) / T
        exact2 = float(mafbm.fbm_var(t[-1:], H, 2))
        exact1 = float(mafbm.fbm_var(t[-1:], H, 1))
        keep = t.cpu() >= 0.1
        bias = float(((mafbm.mafbm_var(t.cpu(), w, g, 2) - mafbm.fbm_var(t.cpu(), H, 2)).abs()
                      / mafbm.fbm_var(t.cpu(), H, 2))[keep].max())

        def ma(n, t=t):
            return mafbm.sample_mafbm(t, H, n, K=K, kind=2, dtype=dtype)

        def dh(n, T=T):
            return mafbm.sample_fbm_davies_harte(T, H, n, device=dev)

        for name, fn, exact, b in (("mafbm", ma, exact2, bias), ("davies_harte", dh, exact1, 0.0)):
            tot, x = timed(lambda fn=fn: fn(P), dev, args.repeats)
            one, _ = timed(lambda fn=fn: fn(1), dev, args.repeats)
            err, se = var_error(x, exact)
            rows[f"{name}/T={T}"] = {"total_s": tot, "one_path_s": one,
                                     "ms_per_path": 1e3 * max(tot - one, 0.0) / (P - 1),
                                     "var1_rel_err": err, "var1_mc_se": se,
                                     "var_bias_max": b}
        if T <= args.chol_max:
            def setup(t=t, T=T):
                C = mafbm.fbm_cov(t, H, 2)
                return torch.linalg.cholesky(C + 1e-12 * torch.eye(T, dtype=C.dtype,
                                                                   device=C.device))
            s_setup, L = timed(setup, dev, 1)

            def draw(n, L=L, T=T):
                return torch.randn(n, T, dtype=L.dtype, device=dev) @ L.T
            s_batch, x = timed(lambda: draw(P), dev, args.repeats)
            s_one, _ = timed(lambda: draw(1), dev, args.repeats)
            err, se = var_error(x, exact2)
            rows[f"cholesky/T={T}"] = {"total_s": s_setup + s_batch,
                                       "one_path_s": s_setup + s_one,
                                       "ms_per_path": 1e3 * max(s_batch - s_one, 0.0) / (P - 1),
                                       "var1_rel_err": err, "var1_mc_se": se,
                                       "var_bias_max": 0.0}
            del L
            ch = rows[f"cholesky/T={T}"]
            for name in ("mafbm", "davies_harte"):
                r = rows[f"{name}/T={T}"]
                r["speedup_batch"] = ch["total_s"] / r["total_s"]
                r["speedup_one"] = ch["one_path_s"] / r["one_path_s"]
        print(f"T = {T} done", flush=True)
    for name in ("mafbm", "davies_harte", "cholesky"):
        pts = [(T, rows[f"{name}/T={T}"]) for T in Ts if f"{name}/T={T}" in rows]
        if len(pts) >= 2:
            lt = np.log([p[0] for p in pts])
            rows[f"slope/{name}"] = {
                "total_s": float(np.polyfit(lt, np.log([p[1]["total_s"] for p in pts]), 1)[0]),
                "one_path_s": float(np.polyfit(lt, np.log([p[1]["one_path_s"] for p in pts]),
                                               1)[0])}
    cols = ["total_s", "ms_per_path", "one_path_s", "var1_rel_err", "var1_mc_se",
            "var_bias_max", "speedup_batch", "speedup_one"]
    report(rows, cols, args.json)
    return rows


if __name__ == "__main__":
    main()
