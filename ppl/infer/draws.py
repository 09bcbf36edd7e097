"""Draws of model sites, one model run per posterior draw, with the sites' own shapes.

``pyro.infer.Predictive`` pads global sites with singleton plate dimensions (``[n, 1, D]``
for a ``[D]`` latent in a model with one plate) so that its vectorised mode broadcasts;
replaying those padded values into a model breaks ``x @ w``. BDL's results keep each
site's declared shape (``[n, D]``), so draws are made here sequentially: condition the
model on draw i (or trace the guide), run it once, read the sites.
"""

from __future__ import annotations

import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import prune_subsample_sites

from ..runtime.dependent_support import SUFFIX

_SIMULATING = [0]


def simulating() -> bool:
    """Whether the model runs inside :class:`simulate_observed`: a construct that conditions
    a latent on the observed data in closed form (``fractional_sde(control=optimal)``) must
    then draw it from the prior, or the data would leak into the prior predictive."""
    return _SIMULATING[0] > 0


class at_values(Messenger):
    """Each latent sample site named in ``values`` takes that value (the site's dtype,
    laid out in its shape as :func:`~ppl.runtime.shapes.site_shaped` allows) instead of a
    prior draw, and stays latent (not observed, unlike ``poutine.condition``): the sites
    after it are built from the values given, never from a draw that may fall outside a
    support that follows it (``y ~ Uniform(a, 1.0)`` at a = 1.54). A site not in
    ``values``, or whose value does not fit it, keeps its draw and is entered in
    ``reached`` as name: its shape (the sites set as name: None), for the caller to
    report. ``Model.log_density`` names the sites so; ``predict`` learns the params'
    shapes at a saved draw."""

    def __init__(self, values: dict, reached: dict | None = None):
        super().__init__()
        self.values = values
        self.reached = {} if reached is None else reached

    def _process_message(self, msg):
        from pyro.poutine.subsample_messenger import _Subsample

        from ..runtime.shapes import site_shaped

        if msg["type"] != "sample" or msg["is_observed"] or msg["value"] is not None \
                or isinstance(msg["fn"], _Subsample):  # a plate's indices, not a latent
            return
        name = msg["name"]
        draw = msg["fn"](*msg["args"], **msg["kwargs"])
        v = draw
        if name in self.values:
            try:
                v = site_shaped(torch.as_tensor(self.values[name], dtype=draw.dtype,
                                                device=draw.device), draw.shape)
            except (TypeError, ValueError, RuntimeError):
                pass
        fits = name in self.values and v.shape == draw.shape
        self.reached[name] = None if fits else tuple(draw.shape)
        msg["value"] = v if fits else draw


class simulate_observed(Messenger):
    """Observed sites draw a fresh value from their distribution instead (a prior-predictive
    data set), like ``poutine.uncondition``, except where the distribution cannot be
    sampled: a conditional construct (the monotone DBM's pixels) keeps its data."""

    def __enter__(self):
        _SIMULATING[0] += 1
        return super().__enter__()

    def __exit__(self, *exc):
        _SIMULATING[0] -= 1
        return super().__exit__(*exc)

    def _pyro_sample(self, msg):
        infer = msg["infer"]
        if not msg["is_observed"] or infer.get("_deterministic") or infer.get("is_auxiliary"):
            return  # deterministic and factor sites stay as they are
        try:
            value = msg["fn"](*msg["args"], **msg["kwargs"])
        except NotImplementedError:
            return
        msg["value"] = value
        msg["is_observed"] = False


def plate_layout(trace) -> dict[str, tuple]:
    """The sites of ``trace`` that Pyro lays out with unit dims for plates they are not
    in, by name -> their plates' Pyro dims, outermost first (``rt.plate_aligned``'s
    ``dims``): in plate N (dim -2) around plate M (dim -1), ``m`` drawn in N only is
    [N, 1] in the model and ``(-2,)`` here. Latent, observed and deterministic sites
    alike; sites of the innermost plates and outside plates are not listed."""
    out = {}
    for name, site in prune_subsample_sites(trace).nodes.items():
        if site["type"] != "sample":
            continue
        dims = tuple(sorted(f.dim for f in site["cond_indep_stack"]
                            if f.vectorized and f.dim is not None))
        if dims and len(dims) < -dims[0]:
            out[name] = dims
    return out


def site_layout(model, kwargs: dict) -> dict[str, tuple]:
    """:func:`plate_layout` of one run of ``model`` (seeded 0, with torch's, numpy's and
    ``random``'s streams restored after, so the draws that follow are unchanged: the
    redraws reseed all three), at a draw where the model's distributions take their
    arguments (``ppl.infer.run._prior_trace``)."""
    from .rng import seeded
    from .run import _prior_trace

    with torch.no_grad(), seeded(0):
        return plate_layout(_prior_trace(model, kwargs, 0))


def site_draws(model, kwargs: dict, *, posterior: dict | None = None, guide=None,
               num_samples: int | None = None, sites: list[str] | None = None,
               labels: str = "sample", in_support: bool = False) -> dict[str, torch.Tensor]:
    """Stack ``sites`` over draws; ``sites=None``: every unobserved sample site and every
    deterministic site that the posterior does not fix.

    ``posterior[name]`` is [draws, ...]; with ``guide`` each draw comes from the guide,
    and with ``in_support`` a guide's draw at which a latent's log density is not finite
    (a state of density 0 of the model: a declared bound that follows the latents left
    a latent no value) is drawn again, up to ``INIT_TRIES`` times, as a step of the fit
    is (``ppl.infer.run._step``; with labels summed out, the draw with its labels drawn
    from their conditional: :func:`_labelled`). Without either, a prior
    draw of density 0 is drawn again (``ppl.infer.run.PriorDraws``).
    A finite-support latent that neither fixes (summed out in the fit) is drawn from its
    exact conditional posterior given the draw and the data (:mod:`ppl.infer.discrete`),
    or with ``labels="map"`` set to that conditional's most probable joint assignment.
    """
    if posterior:
        n = next(iter(posterior.values())).shape[0]
        if num_samples is not None:
            n = min(n, num_samples)
    else:
        n = num_samples or 1000
    out: dict[str, list] = {}
    discrete = None  # plate nesting, when finite-support latents are drawn exactly
    # a look at the model's sites, on a forked stream: it also builds any network not
    # built yet (after another fit, or from a run folder), whose random initial weights
    # would otherwise take draws from the seeded stream (its weights come from the
    # parameter store), so the same seed gives the same draws either way; at the first
    # posterior draw, not a prior one that a support following a latent may refuse
    look = at_values({k: v[0] for k, v in posterior.items()})(model) if posterior else model
    # prior draws of density 0 (a refused argument that follows the latents) are drawn
    # again: the draws are of the prior where the model is defined (run.PriorDraws)
    from .run import INIT_TRIES, PriorDraws

    prior = None if posterior or guide is not None else PriorDraws()
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        tr = PriorDraws().trace(look, kwargs) if prior is not None else \
            poutine.trace(look).get_trace(**kwargs)
    if guide is not None or posterior:
        from .discrete import enumerable_sites, plate_nesting

        if posterior:
            # draws in their declared shape (``Fit.samples``, a run folder) or in Pyro's
            # ([N, 1] for a latent of an outer plate: run folders before that): the
            # same numbers either way, at the site's shape here
            from ..runtime.shapes import site_shaped

            posterior = {k: site_shaped(v, tr.nodes[k]["value"].shape, lead=1)
                         if k in tr.nodes else v for k, v in posterior.items()}
        # optional data left out (a site named like a data argument) is read by nothing
        # in the model, so its prior draw given the others is already its posterior
        if [s for s in enumerable_sites(tr)
                if s not in kwargs and not (posterior and s in posterior)]:
            discrete = plate_nesting(tr)
            shapes = {k: v["value"].shape for k, v in tr.nodes.items()
                      if v["type"] == "sample"}
    with torch.no_grad():
        for i in range(n):
            given: set = set()
            if guide is not None and discrete is not None:
                # conditioned, not replayed: a replayed site is 'done' before Pyro's
                # enumeration sees it, so a latent whose density reads a label summed out
                # (rt.LabelFree) would lose the label's dim in its log density
                for _ in range(INIT_TRIES if in_support else 1):
                    g = poutine.trace(guide).get_trace(**kwargs)
                    given = {k for k, v in g.nodes.items()
                             if v["type"] == "sample" and not v["is_observed"]}
                    run = poutine.condition(model, {k: g.nodes[k]["value"] for k in given})
                    if not in_support:
                        break
                    # the labels drawn from their conditional given the draw: an assignment
                    # of density 0 is drawn only where every one has density 0 (or none
                    # can be drawn), so the draw has density 0 where this one has
                    tr, zero = _labelled(run, discrete, labels, kwargs, given)
                    if zero is None:
                        break
                else:
                    raise _all_refused(zero, i, n)
            elif guide is not None:
                for _ in range(INIT_TRIES if in_support else 1):
                    g = poutine.trace(guide).get_trace(**kwargs)
                    run = poutine.replay(model, trace=g)
                    if in_support:  # a draw of density 0 is drawn again, as in the fit
                        tr = poutine.trace(run).get_trace(**kwargs)
                        zero = _density_zero(tr)
                        if zero is None:
                            break
                else:
                    if in_support:  # kept none: the last was kept at density 0, unsaid
                        raise _all_refused(zero, i, n)
            elif posterior:
                run = poutine.condition(model, {k: v[i] for k, v in posterior.items()})
            else:
                run = model
            if not in_support or guide is None:
                if discrete is not None:
                    # marginalised in the fit: drawn from p(z | this draw, data), not the
                    # prior
                    from .discrete import posterior_draw

                    run = posterior_draw(run, discrete, labels)
                tr = prior.trace(run, kwargs) if prior is not None else \
                    poutine.trace(run).get_trace(**kwargs)
            tr = prune_subsample_sites(tr)
            for name, site in tr.nodes.items():
                if site["type"] != "sample":
                    continue
                wanted = name in sites if sites is not None else (name in given or (
                    (not site["is_observed"] or site["infer"].get("_deterministic"))
                    and not (posterior and name in posterior and guide is None))
                ) and not name.endswith(SUFFIX)  # z, not its draw on the real line
                if wanted:
                    value = site["value"].detach()
                    if discrete is not None and name in shapes:
                        # infer_discrete drops a plate of size 1: the site's own shape
                        value = value.reshape(shapes[name])
                    out.setdefault(name, []).append(value)
    return {k: torch.stack(v) for k, v in out.items()}


def _all_refused(site: str, i: int, n: int):
    """The located error at ``site`` where :data:`INIT_TRIES` draws of the guide in a row
    had density 0 there (for draw ``i`` of ``n``), as the fit's own redraws say
    (``ppl.infer.run._step``); the last of them was kept, silently."""
    from ..locate import SiteError
    from .run import INIT_TRIES

    site = site[:-len(SUFFIX)] if site.endswith(SUFFIX) else site  # z, not z on the line
    return SiteError(
        f"the guide's draws put the latent '{site}' where the model has density 0: its "
        "log density was not finite at each of them (a declared bound, or an argument, "
        "that follows the latents left it no value)", site,
        [f"at draw {i + 1} of {n}, {INIT_TRIES} draws of the guide in a row were refused: "
         "at each the model had density 0, and it was drawn again; the guide puts its "
         "mass where the model has none"])


def _labelled(run, nesting: int, labels: str, kwargs: dict, given: set):
    """(the trace of ``run``, the model conditioned on a guide's draw ``given``, with its
    labels drawn from their conditional (``ppl.infer.discrete.posterior_draw``), the
    first latent at which it has density 0 or None). The conditional draws an assignment
    of density 0 only where every one has density 0 (``z: real<upper=(a + k)>`` at ``a <=
    -1``; at ``-1 < a <= 0`` it draws ``k = 1``), so the draw has density 0 just where it
    has with these labels. Sites drawn afresh are read under their own masks
    (``_fresh_mask``), not the conditional's."""
    from .discrete import posterior_draw

    tr = poutine.trace(posterior_draw(run, nesting, labels)).get_trace(**kwargs)
    return tr, _density_zero(tr, given)


def _density_zero(trace, given: set = frozenset()) -> str | None:
    """The first latent site of ``trace`` (or site named in ``given``: a guide's draw the
    model was conditioned on) whose log density is not finite where its mask holds, else
    None."""
    for name, site in trace.nodes.items():
        if site["type"] == "sample" and (not site["is_observed"] or name in given) \
                and not site["infer"].get("_deterministic"):
            # a site drawn afresh beside labels: its own mask, not posterior_draw's
            mask = site["infer"].get("_fresh_mask", site["mask"])
            try:
                lp = site["fn"].log_prob(site["value"])
                if isinstance(mask, torch.Tensor):
                    lp = torch.where(mask, lp, torch.zeros_like(lp))
                if mask is not False and not bool(torch.isfinite(lp).all()):
                    return name
            except (ValueError, RuntimeError, NotImplementedError):
                continue
    return None


__all__ = ["site_draws"]
