"""Time to fit a GP-matched prior: the reference scheme (critic re-initialised at every outer
step) against ours (critic warm-started across outer steps), in one process, same seed.

Setting (METHODS.md §1, UCI column; the reference measured 1.3 s per outer iteration on 2
CPU threads): inputs of one UCI training split standardised, BNN D -> 100 -> 1 tanh with
fan-in scaling, GPiG prior (per-layer softplus scales, RMSprop lr 0.05) matched to
GP(0, RBF(ℓ = √(2D), σ² = 1)); each outer step draws M = 100 measurement points (70%
training inputs, 30% uniform in their box) and 128 function samples; critic M -> 200 ->
200 -> 1 softplus, Adagrad lr 0.02, gradient penalty λ = 10. Reference: 200 critic steps
from a fresh critic at every outer step. Ours: 200 at the first step, then ``--warm-steps``
per step on the same critic. The final W1 of each fitted prior (and of the initial FG
prior) is measured the same way for both: a fresh critic trained ``--w1-steps`` steps at
each of ``--eval-sets`` measurement sets drawn independently of either fit, evaluated on
held-out samples; the mean over sets, and the paired difference ± its standard error.

    python benchmarks/prior_fit_speed.py --data ../shared/data/uci/concrete --steps 200 \\
        --json /tmp/prior_fit_speed.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ppl.runtime import network_priors as npr
from ppl.runtime.kernels import RBF

REF_CRITIC_STEPS = 200
REF_S_PER_STEP = 1.3  # METHODS.md §1 (ref), 2 CPU threads


def load_inputs(folder: Path, split: int) -> torch.Tensor:
    """Standardised training inputs of one split, float64 on the CPU."""
    data = np.loadtxt(folder / "data.txt")
    feats = np.loadtxt(folder / "index_features.txt", dtype=int).reshape(-1)
    tr = np.loadtxt(folder / f"index_train_{split}.txt", dtype=int)
    x = data[tr][:, feats]
    sd = x.std(0)
    sd[sd == 0] = 1.0
    return torch.tensor((x - x.mean(0)) / sd, dtype=torch.float64)


def fit(x, sizes, kernel, steps: int, warm: bool, warm_steps: int, seed: int) -> dict:
    """One matching run; returns psi, the W1 trace and wall seconds."""
    t0 = time.perf_counter()
    out = npr.match_gp(sizes, torch.tanh, kernel, x, family="gaussian", steps=steps,
                       samples=128, points=100, critic_steps=warm_steps,
                       critic_init_steps=REF_CRITIC_STEPS, lr=0.05, measure="data",
                       seed=seed, critic_lr=0.02, warm_start=warm)
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    out["seconds"] = time.perf_counter() - t0
    return out


def eval_w1(psi, x, sizes, kernel, sets: list[torch.Tensor], w1_steps: int, seed: int) -> list:
    """W1(GP, prior(psi)) by a fresh critic at each measurement set (same seeds for every
    psi, so differences between priors are paired)."""
    out = []
    for j, xm in enumerate(sets):
        g = torch.Generator(device=x.device).manual_seed(seed + j)
        draw_gp = npr.gp_sampler(kernel, xm)

        def p(n, g=g, xm=xm):
            return npr.forward(xm, npr.prior_weights(psi, "gaussian", sizes, n, g),
                               torch.tanh)[..., 0]
        out.append(npr.estimate_w1(p, lambda n, g=g, d=draw_gp: d(n, g), xm.shape[0],
                                   steps=w1_steps, n=256, lr=0.02, seed=seed + j,
                                   eval_n=2000, dtype=x.dtype, device=x.device))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    data_root = Path(os.environ.get("BDL_DATA", Path(__file__).resolve().parents[2] / "shared"
                                    / "data"))
    ap.add_argument("--data", default=str(data_root / "uci" / "concrete"),
                    help="a dataset folder in the UCI layout")
    ap.add_argument("--split", type=int, default=0)
    ap.add_argument("--steps", type=int, default=200,
                    help="outer steps of each fit (reference: 200)")
    ap.add_argument("--warm-steps", type=int, default=20,
                    help="critic steps per outer step after the first, warm-started")
    ap.add_argument("--hidden", type=int, default=100)
    ap.add_argument("--eval-sets", type=int, default=4)
    ap.add_argument("--w1-steps", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("prior_fit_speed: --device cuda was asked for, but CUDA is not available here")
    torch.set_num_threads(a.threads)
    x = load_inputs(Path(a.data), a.split).to(device=a.device, dtype=torch.float32)
    dim = x.shape[1]
    sizes = [dim, a.hidden, 1]
    kernel = RBF(lengthscale=math.sqrt(2 * dim), variance=1.0)
    print(f"{Path(a.data).name}: N = {x.shape[0]}, D = {dim}, {a.steps} outer steps, "
          f"device {a.device}, {torch.get_num_threads()} torch thread(s)", file=sys.stderr)
    runs = {"reference": fit(x, sizes, kernel, a.steps, False, a.warm_steps, a.seed),
            "warm": fit(x, sizes, kernel, a.steps, True, a.warm_steps, a.seed)}
    g = torch.Generator(device=x.device).manual_seed(10_000 + a.seed)
    sets = [npr.measurement_set(x, 100, "data", g) for _ in range(a.eval_sets)]
    psi_fg = npr._init_psi(2, "gaussian", x.dtype, x.device)
    w1 = {"fg": eval_w1(psi_fg, x, sizes, kernel, sets, a.w1_steps, a.seed)}
    for name, r in runs.items():
        w1[name] = eval_w1(r["psi"], x, sizes, kernel, sets, a.w1_steps, a.seed)
    diff = np.array(w1["reference"]) - np.array(w1["warm"])
    speed = (runs["reference"]["seconds"] / a.steps) / (runs["warm"]["seconds"] / a.steps)
    rows = {"fg": {"w1": float(np.mean(w1["fg"])),
                   "w1_se": float(np.std(w1["fg"], ddof=1) / math.sqrt(a.eval_sets))}}
    for name, r in runs.items():
        v = np.array(w1[name])
        rows[name] = {"s_per_step": r["seconds"] / a.steps, "fit_s": r["seconds"],
                      "w1": float(v.mean()), "w1_se": float(v.std(ddof=1) / math.sqrt(len(v))),
                      "w1_trace_last": float(np.nanmean(r["w1"][-10:])),
                      "critic_steps": REF_CRITIC_STEPS * a.steps if name == "reference"
                      else REF_CRITIC_STEPS + a.warm_steps * (a.steps - 1)}
    rows["warm"]["speedup"] = speed
    rows["warm"]["w1_minus_reference"] = float(-diff.mean())
    rows["warm"]["w1_diff_se"] = float(diff.std(ddof=1) / math.sqrt(len(diff)))
    rows["warm"]["vs_ref_1p3s"] = REF_S_PER_STEP / rows["warm"]["s_per_step"]
    print("| scheme | s_per_step | fit_s | critic_steps | w1 (fresh critic) |")
    print("|---|---|---|---|---|")
    fg = rows["fg"]
    print(f"| fg (initial prior) | - | - | - | {fg['w1']:.3f} ± {fg['w1_se']:.3f} |")
    for name in runs:
        r = rows[name]
        print(f"| {name} | {r['s_per_step']:.3f} | {r['fit_s']:.1f} | {r['critic_steps']} | "
              f"{r['w1']:.3f} ± {r['w1_se']:.3f} |")
    print(f"speed-up {speed:.2f}x; final W1 warm - reference = "
          f"{rows['warm']['w1_minus_reference']:+.3f} ± {rows['warm']['w1_diff_se']:.3f} "
          f"(paired over {a.eval_sets} measurement sets); the reference's "
          f"{REF_S_PER_STEP} s per step (2 threads) / ours = {rows['warm']['vs_ref_1p3s']:.2f}x")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
