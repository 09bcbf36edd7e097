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
Chains start from a prior draw (hierarchical variances at their prior median); after
``warmup`` burn-in steps a draw is kept every ``thin`` steps, and the first ``drop`` kept
draws are discarded.

Chains. With ``vectorize`` (the default) the C chains move together: their unconstrained
values carry a leading chain dimension and one step evaluates all C potentials and their
gradients at once, ``torch.func.vmap`` over the per-chain potential (the generated
model's own indexing, e.g. ``f(x)[:, 0]``, sees one chain's values, so every model that
the sequential sampler runs is eligible; a model that vmap cannot batch falls back to a
loop over the chains inside each step, with a warning). Each chain draws its own minibatch
(uniform without replacement, the plate's ``_Subsample`` law; the indices are drawn here
and conditioned into the plate's subsample site), its own momentum noise and its own Gibbs
draws, so the chains stay independent. Seeds: chain c's starting point is the prior draw
made after ``pyro.set_rng_seed(chain_seed(seed, c))`` (``ppl.infer.methods``: ``seed`` for
chain 0, ``SeedSequence(seed, spawn_key=(c,))`` for the others), in both modes, so the
batched and the sequential runs start from the same C points; the dynamics' randomness
(noise, minibatches, Gibbs) of a batched run then comes from one stream seeded
``dynamics_seed(seed, 0)``, whereas the sequential run (``vectorize=false``) reseeds
``dynamics_seed(seed, c)`` before chain c's dynamics. That seed is derived from the
entropy (seed, c, 0x5347) by numpy's SeedSequence, another input than any chain seed's
(``seed`` itself, or the entropy seed with spawn key (c,)), so the dynamics never replay
the normals that drew a starting point (tests/test_sghmc.py checks the seeds apart), and
seeds s and s + 1 share no dynamics stream and no starting point. Chain c of the
two runs therefore follows different paths with the same law (tests/test_sghmc.py checks
the laws); a batched run with one chain is the sequential run's chain 0, step for step.
During the sampler loop Pyro's validation is off (values stay in their supports through
the bijections); the observed values are checked against their supports before it, at the
first chain's starting point (``ppl.infer.run.check_supports``).
"""

from __future__ import annotations

import math
import sys
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer.autoguide.initialization import InitMessenger, init_to_median, init_to_sample
from torch.distributions import biject_to

from ..locate import SiteError
from .fit import Fit
from .methods import chain_seed

#: evaluate a batched step's chains by vmap (False: a loop over chains; for benchmarks)
VMAP_CHAINS = True


def _init(site):
    """Start hierarchical variances at their prior median and draw everything else from
    the prior given them (a heavy-tailed variance draw would start its weights far out,
    and SGHMC takes thousands of steps to walk back)."""
    if "bdl_gibbs" in site["infer"]:
        return init_to_median(site)
    return init_to_sample(site)


def _sites(model, kwargs, check: bool = False):
    """One prior trace: free latents (bijection, value), Gibbs sites (spec, value),
    deterministic sites' shapes and subsampled plates' (size, subsample size). ``check``:
    first, every observed value in its support (``ppl.infer.run.check_supports``)."""
    with pyro.validation_enabled(True):
        tr = poutine.trace(InitMessenger(_init)(model)).get_trace(**kwargs)
    if check:
        from .run import check_supports

        check_supports(model, kwargs, tr)
    free, gibbs, dets, plates = {}, {}, {}, {}
    for name, site in tr.nodes.items():
        if site["type"] != "sample":
            continue
        if type(site["fn"]).__name__ == "_Subsample":
            size, sub = site["fn"].size, site["fn"].subsample_size
            if sub is not None and sub < size:
                plates[name] = (int(size), int(sub))
        elif site["infer"].get("_deterministic"):
            dets[name] = tuple(site["value"].shape)
        elif site["is_observed"]:
            continue
        elif "bdl_gibbs" in site["infer"]:
            gibbs[name] = (site["infer"]["bdl_gibbs"], site["value"].detach())
        elif site["fn"].support.is_discrete or getattr(site["fn"], "has_enumerate_support",
                                                       False):  # Empirical: support Real()
            raise _discrete_latent(name)
        else:
            local = next((f.name for f in site["cond_indep_stack"]
                          if f.full_size is not None and f.size < f.full_size), None)
            if local is not None:
                raise _local_latent(name, local)
            free[name] = (biject_to(site["fn"].support), site["value"].detach())
    return free, gibbs, dets, plates


def _discrete_latent(name: str) -> SiteError:
    """The user error of SGHMC on a model with a discrete latent: its dynamics move
    continuous coordinates only, and it does not sum labels out as NUTS and SVI do."""
    return SiteError(
        f"'sghmc' moves continuous latents only, and '{name}' is discrete", name,
        ["sum it out with infer nuts(...), svi(...) or map(...), which draw it "
         "afterwards, or marginalise it in the model (MixtureSameFamily)"])


def _local_latent(name: str, plate: str) -> SiteError:
    """The user error of SGHMC on a latent local to a subsampled plate: its chains keep one
    state of each latent's full shape, and a minibatch holds only some of the rows."""
    return SiteError(
        f"'sghmc' keeps a state of each latent's full shape, and '{name}' is local to "
        f"the subsampled plate '{plate}', whose minibatch holds only some of its rows", name,
        ["fit it with infer svi(...) (the guide keeps every row), or drop `batch` from "
         "the plate"])


class _Potential:
    """U(u) = -log p(T(u), held, data on the minibatch idx) - log|det J_T(u)| of one chain,
    through Pyro's own trace (plates scale the minibatch term by N/B)."""

    def __init__(self, model, kwargs, transforms):
        self.model, self.kwargs, self.transforms = model, kwargs, transforms

    def __call__(self, u: dict, held: dict, idx: dict) -> torch.Tensor:
        values, logdet = {**held, **idx}, 0.0
        for name, t in self.transforms.items():
            x = t(u[name])
            logdet = logdet + t.log_abs_det_jacobian(u[name], x).sum()
            values[name] = x
        tr = poutine.trace(poutine.condition(self.model, data=values)).get_trace(**self.kwargs)
        return -(tr.log_prob_sum() + logdet)


class _BatchedGrad:
    """Energies [C] and gradients [C, ...] of C chains' potentials at once: vmap over the
    chain dimension, or (one chain, or a model vmap cannot batch) a loop over chains."""

    def __init__(self, pot: _Potential, chains: int):
        self.pot, self.vmapped = pot, None
        if chains > 1 and VMAP_CHAINS:
            self.vmapped = torch.func.vmap(torch.func.grad_and_value(pot))

    def _loop(self, u, held, idx):
        grads, energies = {k: [] for k in u}, []
        for c in range(next(iter(u.values())).shape[0]):
            uc = {k: v[c].detach().requires_grad_(True) for k, v in u.items()}
            e = self.pot(uc, {k: v[c] for k, v in held.items()},
                         {k: v[c] for k, v in idx.items()})
            gs = torch.autograd.grad(e, list(uc.values()), allow_unused=True)
            for (k, v), g in zip(uc.items(), gs, strict=True):
                grads[k].append(torch.zeros_like(v) if g is None else g)
            energies.append(e.detach())
        return {k: torch.stack(v) for k, v in grads.items()}, torch.stack(energies)

    def __call__(self, u: dict, held: dict, idx: dict):
        if self.vmapped is not None:
            try:
                grads, energy = self.vmapped(u, held, idx)
                return grads, energy.detach()
            except (RuntimeError, ValueError, TypeError, NotImplementedError) as e:
                # data-dependent Python control flow, .item(), an op without a batching rule
                warnings.warn(f"sghmc: the model cannot be vmapped over chains ({e}); "
                              "evaluating the chains one by one in each step", stacklevel=3)
                self.vmapped = None
        return self._loop(u, held, idx)


def _gibbs_update(specs: dict, held: dict, u: dict, transforms: dict, batch_dims: int = 0):
    """v | W ~ IG(a + n/2, b + sum W^2 / 2) for every Gibbs-marked (scalar) variance site;
    the first ``batch_dims`` dimensions of the values are chains, each with its own draw."""
    for name, spec in specs.items():
        ws = [transforms[t](u[t]) for t in spec["targets"]]
        n = sum(math.prod(w.shape[batch_dims:]) for w in ws)
        ss = sum(w.pow(2).reshape(w.shape[:batch_dims] + (-1,)).sum(-1) for w in ws)
        a = torch.as_tensor(spec["alpha"]) + n / 2
        b = torch.as_tensor(spec["beta"]) + ss / 2
        held[name] = dist.InverseGamma(a, b).sample()


def dynamics_seed(seed: int, chain: int) -> int:
    """The seed of the dynamics' stream (noise, minibatches, Gibbs draws) of the run whose
    first chain is ``chain``: derived from the entropy (seed, chain, 0x5347) by
    ``numpy.random.SeedSequence``, an input no starting draw's seed ``chain_seed(seed, c)``
    comes from (``seed``, or the hash of seed with spawn key (c,)), so it meets none of
    them but by the chance of two 32-bit hashes meeting (reseeding with one of those
    would replay the normals that drew that chain's start as its first momentum noise)."""
    return int(np.random.SeedSequence([int(seed), int(chain), 0x5347]).generate_state(1)[0])


def _draw_minibatches(plates: dict, chains: int, device: torch.device | str) -> dict:
    """Per chain, a uniform subset of B of the N indices (without replacement, as the
    plate's own ``_Subsample`` draws): [chains, B] per subsampled plate."""
    return {name: torch.rand(chains, n, device=device).argsort(-1)[:, :b]
            for name, (n, b) in plates.items()}


def run_chains(model, kwargs: dict, opts: dict, chain_ids: list[int],
               progress: bool = False) -> tuple[dict[str, torch.Tensor], dict]:
    """Run the chains ``chain_ids`` together, one batched SGHMC step (module docstring,
    METHODS.md §1) moving all of them; chain c starts from the prior draw seeded
    ``chain_seed(seed, c)`` and the dynamics draw from the stream seeded
    ``dynamics_seed(seed, chain_ids[0])``.
    Returns kept draws {site: [C, S, ...]} and the deterministic sites' shapes."""
    inits = []
    for c in chain_ids:
        pyro.set_rng_seed(chain_seed(opts["seed"], c))
        inits.append(_sites(model, kwargs, check=not inits))
    free, gibbs, dets, plates = inits[0]
    if not free and not gibbs:
        from .run import nothing_to_sample

        raise nothing_to_sample("sghmc", poutine.trace(model).get_trace(**kwargs))
    n_chains = len(chain_ids)
    transforms = {k: t for k, (t, _) in free.items()}
    u = {k: torch.stack([t.inv(s[0][k][1]) for s in inits]) for k, t in transforms.items()}
    held = {k: torch.stack([s[1][k][1] for s in inits]) for k in gibbs}
    specs = {k: spec for k, (spec, _) in gibbs.items()}
    missing = [t for spec in specs.values() for t in spec["targets"] if t not in transforms]
    if missing:
        raise ValueError(f"sghmc: Gibbs targets {missing} are not free latents")
    device = next(iter(u.values())).device if u else torch.empty(0).device
    grad_fn = _BatchedGrad(_Potential(model, kwargs, transforms), n_chains)
    pyro.set_rng_seed(dynamics_seed(opts["seed"], chain_ids[0]))
    eta, alpha = opts["step_size"], opts["friction"]
    adaptive, floor = opts["adaptive"], 1.0
    names = list(u)
    mom = {k: torch.zeros_like(v) for k, v in u.items()}
    tau = {k: torch.ones_like(v) for k, v in u.items()}
    g = {k: torch.ones_like(v) for k, v in u.items()}
    vhat = {k: torch.ones_like(v) for k, v in u.items()}
    total = opts["warmup"] + opts["samples"] * opts["thin"]
    kept = {k: [] for k in names + list(held)}
    every = max(1, total // 10)
    with pyro.validation_enabled(False):
        for step in range(total):
            grads, energy = grad_fn(u, held, _draw_minibatches(plates, n_chains, device))
            burn = step < opts["warmup"]
            with torch.no_grad():
                for k in names:
                    v, gr = u[k], grads[k]
                    if not torch.isfinite(gr).all():
                        raise FloatingPointError(
                            f"sghmc: gradient of '{k}' is not finite at step {step} "
                            "(try a smaller step_size)")
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
                    u[k] = v + mom[k]
                if held and (step + 1) % opts["gibbs_every"] == 0:
                    _gibbs_update(specs, held, u, transforms, batch_dims=1)
                if not burn and (step + 1 - opts["warmup"]) % opts["thin"] == 0:
                    for k, t in transforms.items():
                        kept[k].append(t(u[k]).clone())
                    for k, v in held.items():
                        kept[k].append(v.clone())
            if progress and (step % every == 0 or step == total - 1):
                us = " ".join(f"{float(e):.4g}" for e in energy)
                print(f"chains {[c + 1 for c in chain_ids]} step {step + 1}/{total}  U {us}",
                      file=sys.stderr)
    return {k: torch.stack(v[opts["drop"]:], dim=1) for k, v in kept.items()}, dets


def run(model, kwargs: dict, opts: dict, progress: bool = False) -> Fit:
    """The ``sghmc`` method: all chains in one batched run (``vectorize``) or one after
    another; deterministic sites recomputed per draw with ``pyro.infer.Predictive``."""
    if opts["drop"] >= opts["samples"]:
        raise ValueError("sghmc: drop must be smaller than samples")
    if opts.get("vectorize", True):
        chains, dets = run_chains(model, kwargs, opts, list(range(opts["chains"])), progress)
    else:
        runs = [run_chains(model, kwargs, opts, [c], progress) for c in range(opts["chains"])]
        dets = runs[0][1]
        chains = {k: torch.cat([r[0][k] for r in runs]) for k in runs[0][0]}
    latents = list(chains)
    if dets:
        from pyro.infer import Predictive

        flat = {k: v.flatten(0, 1) for k, v in chains.items()}
        with torch.no_grad():
            pred = Predictive(model, posterior_samples=flat, return_sites=list(dets))(**kwargs)
        n_chains, n_draws = next(iter(chains.values())).shape[:2]
        for k, shape in dets.items():
            # Predictive pads sites outside the model's plates with singleton plate dims
            chains[k] = pred[k].detach().reshape((n_chains, n_draws) + shape)
    return Fit(model, kwargs, chains=chains, latents=latents, deterministics=list(dets))
