"""SGHMC cost per step: chains one after another against all chains in one batched step.

The model is `uci_bnn.py`'s (a D -> H -> 1 tanh MLP, fixed noise, `plate N batch 32`)
on one UCI split, with prior fg (no Gibbs step), fh (hierarchical: Gibbs-marked
variance sites, InverseGamma terms in the potential) or gpig/gpih (matched at the `tiny`
matching budget, once, before timing: the cost per step does not depend on the fit).
For each mode, `Model.fit(..., infer="sghmc")` runs C chains of `--steps` adaptive steps
and the wall time is divided by C x steps (one chain-step). Modes:

- `sequential`: `vectorize=false`, chains one after another (one Pyro trace, one backward
  per chain-step);
- `loop`: one batched step, its C potentials evaluated in a loop (`VMAP_CHAINS = False`);
- `vmap`: one batched step, `torch.func.vmap` over the chains' potentials (the default);
- `before`: the sampler module given by `--before FILE` (e.g. the previous version,
  `git show HEAD~1:ppl/infer/sghmc.py > old.py`), for before/after numbers in one process.

Modes are interleaved and repeated (`--repeats`); the table gives the median.

    python benchmarks/sghmc_speed.py --data ../shared/data/uci/yacht --steps 300 \\
        --chains 4 --priors fg,fh --json /tmp/sghmc_speed.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import ppl
from ppl.infer import run as infer_run
from ppl.infer import sghmc

sys.path.insert(0, str(Path(__file__).resolve().parent))
import uci_bnn  # noqa: E402


def _load_before(path: str):
    """The sampler module in ``path`` as ``ppl.infer._sghmc_before`` (its relative imports
    resolve in ppl.infer)."""
    spec = importlib.util.spec_from_file_location("ppl.infer._sghmc_before", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _model(folder: Path, prior: str, hidden: int):
    xtr, ytr, _, _ = uci_bnn.load(folder, 0)
    x = torch.tensor((xtr - xtr.mean(0)) / xtr.std(0).clip(1e-12), dtype=torch.float32)
    y = torch.tensor((ytr - ytr.mean()) / ytr.std(), dtype=torch.float32)
    src = (uci_bnn.SOURCE.replace("HIDDEN", str(hidden))
           .replace("PRIOR", uci_bnn.prior_source(
               prior, uci_bnn.BUDGETS["tiny"], 0,
               f"rbf(lengthscale={math.sqrt(2 * x.shape[1]):.6g}, variance=1)"))
           .replace("NOISE", f"{math.sqrt(0.1):.6g}"))
    return ppl.compile(src), {"x": x, "y": y}


def time_mode(model, data, mode: str, chains: int, steps: int, device: str,
              before=None) -> float:
    """Milliseconds per chain-step of ``mode`` (whole fit wall time / (chains x steps))."""
    opts = dict(infer="sghmc", chains=chains, warmup=steps - 1, thin=1, samples=1, drop=0,
                step_size=0.05, friction=0.05, adaptive=True, seed=0, dtype="float32",
                device=device, vectorize=mode != "sequential")
    saved_vmap, saved_runner = sghmc.VMAP_CHAINS, infer_run.RUNNERS.get("sghmc")
    try:
        sghmc.VMAP_CHAINS = mode != "loop"
        if mode == "before":
            infer_run.RUNNERS["sghmc"] = before.run
        t0 = time.perf_counter()
        model.fit(data, **opts)
        wall = time.perf_counter() - t0
    finally:
        sghmc.VMAP_CHAINS = saved_vmap
        if saved_runner is None:
            infer_run.RUNNERS.pop("sghmc", None)
        else:
            infer_run.RUNNERS["sghmc"] = saved_runner
    return 1000 * wall / (chains * steps)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2]
                                          / "shared/data/uci/yacht"))
    ap.add_argument("--priors", default="fg,fh")
    ap.add_argument("--hidden", type=int, default=50)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--steps", type=int, default=300, help="SGHMC steps per chain (size knob)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--modes", default="sequential,loop,vmap")
    ap.add_argument("--before", default=None, help="a previous sghmc.py: adds mode 'before'")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("sghmc_speed: --device cuda was asked for, but CUDA is not available here")
    torch.set_num_threads(a.threads)
    os.environ.setdefault("BDL_CACHE_DIR", tempfile.mkdtemp(prefix="sghmc_speed_"))
    modes = a.modes.split(",") + (["before"] if a.before else [])
    before = _load_before(a.before) if a.before else None
    rows = {}
    for prior in a.priors.split(","):
        model, data = _model(Path(a.data), prior, a.hidden)
        times = {m: [] for m in modes}
        for m in modes:  # first-call costs (imports, functorch set-up) are not per step
            time_mode(model, data, m, a.chains, 5, a.device, before)
        for _ in range(a.repeats):
            for m in modes:
                times[m].append(time_mode(model, data, m, a.chains, a.steps, a.device, before))
        base = statistics.median(times["sequential"]) if "sequential" in times else None
        for m in modes:
            ms = statistics.median(times[m])
            rows[f"{prior}/{m}"] = {"ms_per_chain_step": ms,
                                    "speedup_vs_sequential": base / ms if base else None}
    print(f"{Path(a.data).name}: D->{a.hidden}->1 tanh, batch 32, {a.chains} chains x "
          f"{a.steps} steps, {a.repeats} repeats (median), device {a.device}, "
          f"{torch.get_num_threads()} torch thread(s)")
    print("| row | ms_per_chain_step | speedup_vs_sequential |\n|---|---|---|")
    for k, r in rows.items():
        sp = "-" if r["speedup_vs_sequential"] is None else f"{r['speedup_vs_sequential']:.2f}"
        print(f"| {k} | {r['ms_per_chain_step']:.3f} | {sp} |")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
