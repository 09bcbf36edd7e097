"""Stochastic-gradient HMC for any BDL model (METHODS.md §1, "Inference: SGHMC").

Potential U(w) = -log p(w) - sum_obs log p(y | w), evaluated on the minibatch that the
model's ``plate N batch B`` draws at every call (Pyro scales the batch term by N/B), over
the unconstrained latents (log |det J| of each latent's bijection included).

Plain SGHMC (Chen et al. 2014), friction alpha, learning rate eta:
    v <- v - eta grad U - alpha v + N(0, 2 alpha eta);   w <- w + v.
Adaptive SGHMC (Springenberg et al. 2016): during burn-in, per coordinate,
    tau <- tau - tau g^2 / vhat + 1;  g <- g + (grad U - g)/(tau + 1);
    vhat <- vhat + (grad U^2 - vhat)/(tau + 1),
(g and vhat start at the first gradient and its square: starting them at 1, as the
reference does, lets the first steps of a model with gradients of order N throw the
weights far out), and with M^-1 = 1 / (sqrt(vhat) + 1), always
    v <- v - eta^2 M^-1 grad U - alpha v + N(0, 2 eta^2 alpha M^-1 - eta^4)  (clamped >= 0).
The reference adds eps = 1e-8 to sqrt(vhat); here it is 1 (the preconditioner is capped at
1): a coordinate whose gradient vanished during burn-in (a saturated or dead unit) would
otherwise get M^-1 ~ 1e8 and noise kicks far larger than its prior scale, and the chain
diverges. Any fixed M leaves the target invariant; the cap only matters where gradients
are below 1. Variance sites of hierarchical priors (marked ``infer={"bdl_gibbs": ...}`` by
``rt.network_priors``) are not moved by the dynamics: every ``gibbs_every`` steps they are
drawn from their conjugate conditional IG(a + n/2, b + ||W||^2 / 2).
Chains start from a prior draw (hierarchical variances at their prior median) and run one
after another, seeded ``seed + chain``; after ``warmup`` burn-in steps a
draw is kept every ``thin`` steps, and the first ``drop`` kept draws are discarded.
"""

from __future__ import annotations

import sys

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer.autoguide.initialization import InitMessenger, init_to_median, init_to_sample
from torch.distributions import biject_to

from .fit import Fit


def _init(site):
    """Start hierarchical variances at their prior median and draw everything else from
    the prior given them (a heavy-tailed variance draw would start its weights far out,
    and SGHMC takes thousands of steps to walk back)."""
    if "bdl_gibbs" in site["infer"]:
        return init_to_median(site)
    return init_to_sample(site)


def _sites(model, kwargs):
    tr = poutine.trace(InitMessenger(_init)(model)).get_trace(**kwargs)
    free, gibbs, dets = {}, {}, {}
    for name, site in tr.nodes.items():
        if site["type"] != "sample" or type(site["fn"]).__name__ == "_Subsample":
            continue
        if site["infer"].get("_deterministic"):
            dets[name] = tuple(site["value"].shape)
        elif site["is_observed"]:
            continue
        elif "bdl_gibbs" in site["infer"]:
            gibbs[name] = (site["infer"]["bdl_gibbs"], site["value"].detach())
        else:
            free[name] = (biject_to(site["fn"].support), site["value"].detach())
    return free, gibbs, dets


class _Potential:
    """U(u) and its gradient for unconstrained values u, given the Gibbs-held values."""

    def __init__(self, model, kwargs, transforms):
        self.model, self.kwargs, self.transforms = model, kwargs, transforms

    def __call__(self, u: dict, held: dict):
        values, logdet = dict(held), 0.0
        for name, t in self.transforms.items():
            x = t(u[name])
            logdet = logdet + t.log_abs_det_jacobian(u[name], x).sum()
            values[name] = x
        tr = poutine.trace(poutine.condition(self.model, data=values)).get_trace(**self.kwargs)
        return -(tr.log_prob_sum() + logdet), tr


def _gibbs_update(specs: dict, held: dict, u: dict, transforms: dict):
    """v | W ~ IG(a + n/2, b + sum W^2 / 2) for every Gibbs-marked variance site."""
    for name, spec in specs.items():
        ws = [transforms[t](u[t]) for t in spec["targets"]]
        n = sum(w.numel() for w in ws)
        ss = sum(w.pow(2).sum() for w in ws)
        a = torch.as_tensor(spec["alpha"]) + n / 2
        b = torch.as_tensor(spec["beta"]) + ss / 2
        held[name] = dist.InverseGamma(a, b).sample()


def run_chain(model, kwargs, opts, progress=False, chain=0):
    free, gibbs, dets = _sites(model, kwargs)
    transforms = {k: t for k, (t, _) in free.items()}
    u = {k: t.inv(v).clone() for k, (t, v) in free.items()}
    held = {k: v for k, (_, v) in gibbs.items()}
    specs = {k: spec for k, (spec, _) in gibbs.items()}
    missing = [t for spec in specs.values() for t in spec["targets"] if t not in transforms]
    if missing:
        raise ValueError(f"sghmc: Gibbs targets {missing} are not free latents")
    pot = _Potential(model, kwargs, transforms)
    eta, alpha = opts["step_size"], opts["friction"]
    adaptive, floor = opts["adaptive"], 1.0
    mom = {k: torch.zeros_like(v) for k, v in u.items()}
    tau = {k: torch.ones_like(v) for k, v in u.items()}
    g = {k: torch.ones_like(v) for k, v in u.items()}
    vhat = {k: torch.ones_like(v) for k, v in u.items()}
    total = opts["warmup"] + opts["samples"] * opts["thin"]
    kept = {k: [] for k in list(u) + list(held)}
    every = max(1, total // 10)
    for step in range(total):
        for v in u.values():
            v.requires_grad_(True)
        energy, tr = pot(u, held)
        grads = torch.autograd.grad(energy, list(u.values()), allow_unused=True)
        burn = step < opts["warmup"]
        with torch.no_grad():
            for (k, v), gr in zip(list(u.items()), grads, strict=True):
                gr = torch.zeros_like(v) if gr is None else gr
                if not torch.isfinite(gr).all():
                    raise FloatingPointError(f"sghmc: gradient of '{k}' is not finite at step "
                                             f"{step} (try a smaller step_size)")
                if adaptive:
                    if step == 0:  # start the estimates at the first gradient, not at 1
                        g[k], vhat[k] = gr.clone(), gr.pow(2)
                    minv = 1.0 / (vhat[k].sqrt() + floor)
                    if burn:
                        r = 1.0 / (tau[k] + 1.0)
                        tau[k] = tau[k] - tau[k] * g[k].pow(2) / vhat[k] + 1.0
                        g[k] = g[k] + (gr - g[k]) * r
                        vhat[k] = vhat[k] + (gr.pow(2) - vhat[k]) * r
                    var = (2 * eta ** 2 * alpha * minv - eta ** 4).clamp_min(0.0)
                    mom[k] = (mom[k] - eta ** 2 * minv * gr - alpha * mom[k]
                              + var.sqrt() * torch.randn_like(v))
                else:
                    mom[k] = (mom[k] - eta * gr - alpha * mom[k]
                              + (2 * alpha * eta) ** 0.5 * torch.randn_like(v))
                u[k] = (v + mom[k]).detach()
        if held and (step + 1) % opts["gibbs_every"] == 0:
            with torch.no_grad():
                _gibbs_update(specs, held, u, transforms)
        if not burn and (step + 1 - opts["warmup"]) % opts["thin"] == 0:
            with torch.no_grad():
                for k, t in transforms.items():
                    kept[k].append(t(u[k]).detach().clone())
                for k, v in held.items():
                    kept[k].append(v.detach().clone())
        if progress and (step % every == 0 or step == total - 1):
            print(f"chain {chain + 1} step {step + 1}/{total}  U {float(energy):.4g}",
                  file=sys.stderr)
    return {k: torch.stack(v[opts["drop"]:]) for k, v in kept.items()}, dets


def run(model, kwargs, opts, progress=False) -> Fit:
    if opts["drop"] >= opts["samples"]:
        raise ValueError("sghmc: drop must be smaller than samples")
    per_chain, dets = [], {}
    latents = None
    for c in range(opts["chains"]):
        pyro.set_rng_seed(opts["seed"] + c)
        draws, dets = run_chain(model, kwargs, opts, progress, c)
        per_chain.append(draws)
        latents = list(draws)
    chains = {k: torch.stack([pc[k] for pc in per_chain]) for k in latents}
    if dets:
        from pyro.infer import Predictive

        flat = {k: v.reshape((-1,) + v.shape[2:]) for k, v in chains.items()}
        with torch.no_grad():
            pred = Predictive(model, posterior_samples=flat, return_sites=list(dets))(**kwargs)
        n_chains, n_draws = next(iter(chains.values())).shape[:2]
        for k, shape in dets.items():
            # Predictive pads sites outside the model's plates with singleton plate dims
            chains[k] = pred[k].detach().reshape((n_chains, n_draws) + shape)
    return Fit(model, kwargs, chains=chains, latents=latents, deterministics=list(dets))
