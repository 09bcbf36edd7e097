"""Stan's generated quantities for BDL: missing optional data held out of inference.

An optional data argument left out of the data (``y_new: real[M]?``) makes its ``~``
statement a posterior predictive quantity. It must not be a latent of the fit (a delta
guide would collapse it to its mode, an autoguide would approximate a distribution the
model gives exactly), so inference sees the model with those sites fixed and masked, and
their draws are made afterwards from the model given each posterior draw. ``ppl.compile``
models and generated modules run on their own go through the same two functions, so both
give the same numbers for the same seed.
"""

from __future__ import annotations

import pyro
from pyro.poutine.messenger import Messenger

from ..runtime.functions import full_data
from .fit import Fit

_HELD_OUT: list[frozenset] = [frozenset()]


def missing_optional(args, kwargs: dict) -> list[str]:
    """The optional data arguments (``ArgSpec``/IR args with ``optional``) left out of
    ``kwargs``: the candidates for generated quantities (:func:`held_out` keeps those that
    are sample sites)."""
    return [a.name for a in args if a.optional and kwargs.get(a.name) is None]


def held_out_sites() -> frozenset:
    """The sites that :func:`held_out` fixes in the model now running: a construct that
    reads an observed value in closed form (``fractional_sde``'s observation) treats
    these as unobserved."""
    return _HELD_OUT[0]


def held_out(model, kwargs: dict, names: list[str]):
    """(the model with those of ``names`` that are sample sites fixed at a prior draw, log
    density masked; the names held out). Samplers and guides then see the posterior of
    the other latents only."""
    if not names:
        return model, []
    prior = pyro.poutine.trace(model).get_trace(**kwargs)
    with full_data():  # a subsampled plate's sites at full size too (NUTS runs there)
        whole = pyro.poutine.trace(model).get_trace(**kwargs)
    fixed = {n: prior.nodes[n]["value"].detach() for n in names
             if prior.nodes.get(n, {}).get("type") == "sample"}
    if not fixed:
        return model, []
    full = {n: whole.nodes[n]["value"].detach() for n in fixed if n in whole.nodes}

    class _HoldOut(Messenger):
        def __enter__(self):
            self._outer = _HELD_OUT[0]
            _HELD_OUT[0] = self._outer | frozenset(fixed)
            return super().__enter__()

        def __exit__(self, *exc):
            _HELD_OUT[0] = self._outer
            return super().__exit__(*exc)

        def _pyro_sample(self, msg):
            if msg["name"] in fixed:
                # any value of the right shape: its density is masked and nothing reads
                # it (optional data); a fixed one, so that the run consumes no random
                # numbers (jit and eager NUTS then agree), at the plate's size now
                name, shape = msg["name"], msg["fn"].shape()
                value = next((v for v in (fixed[name], full.get(name))
                              if v is not None and v.shape == shape), None)
                msg["value"] = msg["fn"].sample() if value is None else value
                msg["is_observed"] = True
                msg["mask"] = False

    def model_held_out(**kw):
        with _HoldOut():
            return model(**kw)

    return model_held_out, list(fixed)


def add_predictions(result: Fit, names: list[str]) -> None:
    """Posterior predictive draws of ``names``, one per posterior draw, kept by chain.
    Labels summed out in the fit (``result.discrete``) are drawn again in the same pass,
    so that each draw's ``y_new`` and its label ``z_new`` belong together, and with them
    the deterministic sites (``w = mu[z] + b`` is the redrawn ``z``'s, not the fit's)."""
    again = result.discrete + result.deterministics if result.discrete else []
    sites = names + [k for k in dict.fromkeys(again) if k not in names]
    if result.chains:
        n_chains, n_draws = next(iter(result.chains.values())).shape[:2]
        pred = result.predict(None, num_samples=n_chains * n_draws, sites=sites)
    else:  # nothing latent: one chain of as many draws as the method keeps (Fit.predict)
        pred = result.predict(None, sites=sites)
        n_chains, n_draws = 1, next(iter(pred.values())).shape[0]
    for n in sites:
        v = pred[n]
        result.chains[n] = v.reshape((n_chains, n_draws) + tuple(v.shape[1:]))
        if n not in result.deterministics:
            result.deterministics.append(n)


def fit_generated(model, kwargs: dict, method: str, opts: dict, missing: list[str], *,
                  progress: bool = False) -> Fit:
    """Fit ``model`` with the sites of ``missing`` optional data held out, then draw them."""
    from .draws import site_layout
    from .run import SAMPLERS, _hidden_sites, fit

    layout = site_layout(model, kwargs)  # before the fit, which starts afresh
    inner, missing = held_out(model, kwargs, missing)
    if missing and method in SAMPLERS and not _hidden_sites(inner, kwargs)[0]:
        # a simulation: nothing to sample, only generated quantities (Stan's fixed_param)
        opts = {**opts, "samples": opts["samples"] * opts.get("chains", 1)}
        result = fit(inner, kwargs, method, opts, runner=_fixed_param)
    else:
        result = fit(inner, kwargs, method, opts, progress=progress)
    result.model = model
    result.declare(layout)  # every method's draws in their declared shapes
    if missing:
        add_predictions(result, missing)
    return result


def _fixed_param(model, kwargs, opts, progress=False) -> Fit:
    """The runner of a model with nothing latent under a sampler: no draws of its own."""
    return Fit(model, kwargs, chains={}, latents=[], deterministics=[])
