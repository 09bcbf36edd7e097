"""Discrete latent sites: marginalised in the fit, drawn from their posterior afterwards.

A latent with finite support (``z ~ Categorical(w)``, ``Bernoulli``) has no gradient, so
NUTS and SVI sum it out (Pyro's parallel enumeration) and fit the continuous latents of

    p(theta, y) = sum_z p(theta) p(z | theta) p(y | z, theta).

Its posterior draws are then made per draw of theta, from the exact conditional

    p(z | theta, y) ∝ p(z | theta) p(y | z, theta),

by Pyro's ``infer_discrete`` (forward filtering, backward sampling over the plates), as
in Pyro's Gaussian-mixture tutorial and Stan's generated quantities for marginalised
mixtures. With the option ``labels=map`` each draw of theta gets instead the most probable
joint assignment, argmax_z p(z | theta, y) (``infer_discrete(temperature=0)``: max-product
forward, argmax backward; the Viterbi path of a chain of labels), as in Pyro's HMM
examples. NUTS enumerates by itself; SVI needs ``TraceEnum_ELBO`` and a guide that hides
the enumerated sites (:func:`svi_parts`).
"""

from __future__ import annotations

from pyro.infer import config_enumerate, infer_discrete
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import prune_subsample_sites


def enumerable_sites(trace) -> list[str]:
    """Latent sample sites of ``trace`` whose distribution has finite support."""
    out = []
    for name, site in prune_subsample_sites(trace).nodes.items():
        if site["type"] != "sample" or site["is_observed"]:
            continue
        if site["infer"].get("_deterministic") or site["infer"].get("is_auxiliary"):
            continue
        if getattr(site["fn"], "has_enumerate_support", False):
            out.append(name)
    return out


def plate_nesting(trace) -> int:
    """How many plate dimensions the model uses (Pyro's ``max_plate_nesting``)."""
    dims = [-f.dim for site in trace.nodes.values() if site["type"] == "sample"
            for f in site["cond_indep_stack"] if f.vectorized and f.dim is not None]
    return max(dims, default=0)


def enumerated(model):
    """``model`` with its finite-support latents summed out in parallel."""
    return config_enumerate(model, default="parallel")


class _MaskFresh(Messenger):
    """Leaves out of the density the sites drawn afresh in this run (neither observed,
    conditioned, replayed nor enumerated: a left-out ``y_new`` below a label), so that
    ``infer_discrete`` scores each label by the data and the fixed draw only. Without it
    every enumerated label would come with its own random ``y_new``, whose density would
    pull the labels' posterior towards uniform. The site's own mask is kept in its
    ``infer["_fresh_mask"]``: left out of the labels' conditional, not out of the draw's
    density (``ppl.infer.draws``'s check of density 0 reads it)."""

    def _pyro_sample(self, msg):
        if msg["is_observed"] or msg["done"] or msg["infer"].get("_deterministic") \
                or getattr(msg["fn"], "has_enumerate_support", False):
            return
        msg["infer"] = {**msg["infer"], "_fresh_mask": msg["mask"]}
        msg["mask"] = False


def posterior_draw(run, nesting: int, labels: str = "sample"):
    """``run`` (the model conditioned on one draw of the continuous latents) with every
    enumerable latent drawn from its exact conditional posterior (``labels="sample"``) or
    set to the joint argmax of it (``labels="map"``; ``infer_discrete``'s temperature 1
    or 0); sites drawn afresh are then drawn given the labels (:class:`_MaskFresh`)."""
    if labels not in ("sample", "map"):
        raise ValueError(f"labels must be 'sample' or 'map', not {labels!r}")
    return infer_discrete(enumerated(_MaskFresh()(run)), first_available_dim=-1 - nesting,
                          temperature=1 if labels == "sample" else 0)


def _one_scale(trace) -> None:
    """Refuse, as a user error, labels whose minibatch scales differ: ``TraceEnum_ELBO``
    sums the labels out in one contraction, which holds only when every enumerated site
    has the same likelihood scale (N/B of its subsampled plates, 1 in a full plate)."""
    scales: dict[float, str] = {}
    for name in enumerable_sites(trace):
        site = trace.nodes[name]
        scales.setdefault(float(site["scale"]), name)
    if len(scales) > 1:
        from ..locate import SiteError

        shown = ", ".join(f"'{name}' (x{scale:g})" for scale, name in scales.items())
        raise SiteError(  # located at the label whose scale differs from the first's
            f"svi and map sum the discrete latents out in one pass, which needs one "
            f"minibatch scale for all of them; these have different ones: {shown}",
            list(scales.values())[1],
            ["subsample every plate that holds labels by the same fraction of its size, "
             "or none of them (drop `batch`); nuts works on the full data"])


def svi_parts(model, trace, jit: bool, particles: int):
    """(model, elbo) for SVI on a model with enumerable latents (:func:`enumerable_sites`
    of its ``trace``): the model enumerated and ``TraceEnum_ELBO`` (the exact sum over the
    discrete sites, Monte Carlo over the rest). The guide covers the continuous latents
    only (``ppl.infer.run._autoguide`` with the labels hidden)."""
    from pyro.infer import JitTraceEnum_ELBO, TraceEnum_ELBO

    _one_scale(trace)
    nesting = plate_nesting(trace)
    if jit:
        elbo = JitTraceEnum_ELBO(max_plate_nesting=nesting, num_particles=particles,
                                 ignore_jit_warnings=True)
    else:
        elbo = TraceEnum_ELBO(max_plate_nesting=nesting, num_particles=particles)
    return enumerated(model), elbo


__all__ = ["enumerable_sites", "plate_nesting", "enumerated", "posterior_draw", "svi_parts"]
