"""Overhead of BDL over hand-written Pyro: time per NUTS draw and per SVI step.

Two models, each compiled from BDL and written by hand in Pyro the way a Pyro user would
(same sites, same distributions, same shapes):
- ``eight_schools``: ``examples/eight_schools.bdl`` on its data file;
- ``mlp``: a 1 -> 50 -> 50 -> 1 tanh MLP regression with a Normal likelihood and a
  HalfNormal noise scale. Its weights are point estimates (``pyro.module`` parameters),
  not latents, so NUTS does not apply to it (it would only move the noise scale around
  frozen random weights): its NUTS cells are n/a (``null`` in the JSON), SVI applies.

What is timed is the user-level call that gives the same result on both sides:
- NUTS: BDL ``m.fit(data, infer="nuts", samples, warmup, chains=1, seed)`` against
  ``MCMC(NUTS(model)).run(...)`` + ``get_samples()`` + ``Predictive`` for the
  deterministic sites (``theta``), which BDL's fit also returns. Both in float64 (BDL's
  NUTS default). Divided by warmup + samples. The two sides run the same trajectories
  (same seed, same log density): the script checks that the draws agree, so the per-draw
  ratio is pure overhead, not luck in tree sizes.
- SVI: BDL ``m.fit(data, infer="svi", steps, lr=0.01, samples=100)`` against an
  ``AutoNormal`` + ``Adam(0.01)`` + ``Trace_ELBO`` loop of the same steps + ``Predictive``
  of 100 guide draws. Both in float32 (BDL's SVI default). Divided by steps.
The cells are interleaved: every repeat runs each (row, method) pair for BDL and for
Pyro back to back, alternating which goes first. The ms columns are medians over
repeats; the ratio is the median of the per-repeat paired ratios BDL / Pyro (a pair ran
within a second or two, so load from other processes mostly cancels). ``--clock cpu``
(the default) times this process's CPU time, which is what to use on a shared machine;
``--clock wall`` times wall-clock.

    python benchmarks/overhead.py --size small|full [--json OUT] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import MCMC, NUTS, SVI, Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.optim import Adam
from torch import nn

import ppl

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ("nuts_ms_per_draw_bdl", "nuts_ms_per_draw_pyro", "svi_ms_per_step_bdl",
           "svi_ms_per_step_pyro", "ratio_nuts", "ratio_svi")
SIZES = {
    "small": dict(samples=100, warmup=100, steps=200, repeats=3, mlp_n=200),
    "full": dict(samples=300, warmup=300, steps=600, repeats=7, mlp_n=1000),
}

MLP_BDL = """
model MLP(x: real[N, 1], y: real[N]) {
  f = mlp(1, [50, 50], 1, act=tanh)
  sigma ~ HalfNormal(1)
  y ~ Normal(f(x)[:, 0], sigma)
}
"""


# ---- the same models by hand ---------------------------------------------------------

def eight_schools_pyro(J, y, sigma):
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    theta_raw = pyro.sample("theta_raw", dist.Normal(0.0, 1.0).expand([J]).to_event(1))
    theta = pyro.deterministic("theta", mu + tau * theta_raw)
    pyro.sample("y", dist.Normal(theta, sigma).to_event(1), obs=y)


class MLPNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1, 50), nn.Tanh(), nn.Linear(50, 50), nn.Tanh(),
                                 nn.Linear(50, 1))

    def forward(self, x):
        return self.net(x)


_NET: dict = {}


def mlp_pyro(x, y):
    net = _NET.get(torch.get_default_dtype())
    if net is None:
        net = _NET[torch.get_default_dtype()] = MLPNet()
    f = pyro.module("f", net)
    sigma = pyro.sample("sigma", dist.HalfNormal(1.0))
    pyro.sample("y", dist.Normal(f(x)[:, 0], sigma).to_event(1), obs=y)


# ---- one timed cell each -------------------------------------------------------------

def _clock(kind):
    return time.process_time if kind == "cpu" else time.perf_counter


def _tensors(data: dict, dtype) -> dict:
    return {k: torch.as_tensor(np.asarray(v), dtype=dtype) if isinstance(v, list) else v
            for k, v in data.items()}


def nuts_bdl(m, data, cfg, clock):
    t = clock()
    fit = m.fit(data, infer="nuts", samples=cfg["samples"], warmup=cfg["warmup"], chains=1,
                seed=0)
    dt = clock() - t
    return dt, fit.samples


def nuts_pyro(model, data, cfg, clock, dets):
    t = clock()
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        kwargs = _tensors(data, torch.float64)
        mcmc = MCMC(NUTS(model), num_samples=cfg["samples"], warmup_steps=cfg["warmup"],
                    num_chains=1, disable_progbar=True)
        mcmc.run(**kwargs)
        samples = mcmc.get_samples()
        samples.update(Predictive(model, posterior_samples=samples, return_sites=dets)(
            **kwargs))
    finally:
        torch.set_default_dtype(old)
    return clock() - t, samples


def svi_bdl(m, data, cfg, clock):
    t = clock()
    m.fit(data, infer="svi", steps=cfg["steps"], lr=0.01, samples=100, seed=0)
    return clock() - t


def svi_pyro(model, data, cfg, clock, sites):
    t = clock()
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    _NET.clear()
    kwargs = _tensors(data, torch.float32)
    guide = AutoNormal(model)
    svi = SVI(model, guide, Adam({"lr": 0.01}), loss=Trace_ELBO())
    for _ in range(cfg["steps"]):
        svi.step(**kwargs)
    with torch.no_grad():
        Predictive(model, guide=guide, num_samples=100, return_sites=sites)(**kwargs)
    return clock() - t


# ---- the run -------------------------------------------------------------------------

def mlp_data(n: int) -> dict:
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, size=(n, 1))
    y = np.sin(2 * x[:, 0]) + 0.1 * rng.normal(size=n)
    return {"x": x.tolist(), "y": y.tolist()}


def run(size: str, clock_kind: str) -> tuple[dict, list[str]]:
    cfg = SIZES[size]
    clock = _clock(clock_kind)
    notes: list[str] = []
    es = ppl.load(ROOT / "examples" / "eight_schools.bdl")
    es_data = json.loads((ROOT / "examples" / "eight_schools.data.json").read_text())
    mlp = ppl.compile(MLP_BDL)
    m_data = mlp_data(cfg["mlp_n"])
    es_pyro_data = {"J": int(es_data["J"]), "y": es_data["y"], "sigma": es_data["sigma"]}

    cells = {
        ("eight_schools", "nuts"): (
            lambda: nuts_bdl(es, es_data, cfg, clock),
            lambda: nuts_pyro(eight_schools_pyro, es_pyro_data, cfg, clock, ["theta"])),
        ("eight_schools", "svi"): (
            lambda: svi_bdl(es, es_data, cfg, clock),
            lambda: svi_pyro(eight_schools_pyro, es_pyro_data, cfg, clock,
                             ["mu", "tau", "theta_raw", "theta"])),
        ("mlp", "svi"): (
            lambda: svi_bdl(mlp, m_data, cfg, clock),
            lambda: svi_pyro(mlp_pyro, m_data, cfg, clock, ["sigma"])),
    }
    per = {"nuts": cfg["samples"] + cfg["warmup"], "svi": cfg["steps"]}
    # one untimed pass of each so that imports and first-call caches are paid for
    warm = {**cfg, "samples": 5, "warmup": 5, "steps": 5}
    nuts_bdl(es, es_data, warm, clock)
    nuts_pyro(eight_schools_pyro, es_pyro_data, warm, clock, ["theta"])
    svi_bdl(mlp, m_data, warm, clock)
    svi_pyro(mlp_pyro, m_data, warm, clock, ["sigma"])

    times: dict = {key: {"bdl": [], "pyro": [], "ratio": []} for key in cells}
    for rep in range(cfg["repeats"]):
        for key, (bdl, hand) in cells.items():
            order = ("bdl", "pyro") if rep % 2 == 0 else ("pyro", "bdl")
            got = {}
            for side in order:
                out = bdl() if side == "bdl" else hand()
                if isinstance(out, tuple):       # NUTS: (seconds, draws)
                    got[side], draws = out
                    got[side + "_draws"] = draws
                else:
                    got[side] = out
            if key[1] == "nuts" and rep == 0:
                a, b = got["bdl_draws"], got["pyro_draws"]
                same = all(torch.allclose(a[k].double(), b[k].double(), rtol=1e-6, atol=1e-9)
                           for k in ("mu", "tau", "theta_raw", "theta"))
                notes.append(f"{key[0]} NUTS: BDL and Pyro draws "
                             f"{'identical' if same else 'DIFFER (ratio includes tree sizes)'}")
            ms_b = 1e3 * got["bdl"] / per[key[1]]
            ms_p = 1e3 * got["pyro"] / per[key[1]]
            times[key]["bdl"].append(ms_b)
            times[key]["pyro"].append(ms_p)
            times[key]["ratio"].append(ms_b / ms_p)
            print(f"  repeat {rep + 1}/{cfg['repeats']} {key[0]:>13} {key[1]:<4}: "
                  f"bdl {ms_b:.3f} ms, pyro {ms_p:.3f} ms", file=sys.stderr, flush=True)

    table = {}
    for row in ("eight_schools", "mlp"):
        cols: dict = {}
        for method, unit in (("nuts", "ms_per_draw"), ("svi", "ms_per_step")):
            t = times.get((row, method))
            cols[f"{method}_{unit}_bdl"] = statistics.median(t["bdl"]) if t else None
            cols[f"{method}_{unit}_pyro"] = statistics.median(t["pyro"]) if t else None
            cols[f"ratio_{method}"] = statistics.median(t["ratio"]) if t else None
        table[row] = {c: cols[c] for c in COLUMNS}
    return table, notes


def render(table: dict) -> str:
    width = max(len(r) for r in table) + 2
    lines = [f"{'':<{width}}" + "".join(f"{c:>22}" for c in COLUMNS)]
    for row, cols in table.items():
        cells = []
        for c in COLUMNS:
            v = cols[c]
            cells.append(f"{'n/a':>22}" if v is None or (isinstance(v, float) and math.isnan(v))
                         else f"{v:>22.3f}")
        lines.append(f"{row:<{width}}" + "".join(cells))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=list(SIZES), default="small")
    ap.add_argument("--json", metavar="OUT")
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads (default: leave torch's default)")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    table, notes = run(args.size, args.clock)
    print(f"size={args.size} clock={args.clock} torch_threads={torch.get_num_threads()} "
          f"torch={torch.__version__} pyro={pyro.__version__}")
    print(render(table))
    for n in notes:
        print("note:", n)
    print("note: mlp NUTS n/a: the network's weights are point estimates, not latents")
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    main()
