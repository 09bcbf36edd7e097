"""Posterior predictive from saved draws (``bdl predict``)."""

from __future__ import annotations

import pyro
import torch

from ..runtime.functions import full_data
from ..runtime.shapes import declared
from .draws import at_values, plate_layout, site_draws
from .rng import seeded
from .run import torch_defaults


class ParamsMismatch(ValueError):
    """Params the model needs that the run did not save, or saved in another shape
    (``problems``: one phrase each); ``Model.predict_run`` words it for the run folder."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def needed_params(model, kwargs: dict, at: dict | None = None
                  ) -> tuple[dict[str, tuple], object]:
    """Name -> shape of every ``pyro.param`` and network weight that ``model`` creates when
    run on ``kwargs`` from an empty param store, and the trace of that run (its sites and
    their shapes do not depend on the params' values). ``at``: latent values to run it
    at (a saved draw, :class:`~ppl.infer.draws.at_values`) rather than prior draws, which
    may fall outside a support that follows a latent. The caller's store is cleared; the
    random streams are left where they were."""
    from ..runtime import reset_networks

    store = pyro.get_param_store()
    store.clear()
    reset_networks()
    with full_data(), torch.random.fork_rng(devices=[]):
        trace = pyro.poutine.trace(at_values(at or {})(model.pyro_model)).get_trace(**kwargs)
    shapes = {k: tuple(v.shape) for k, v in store.items()}
    store.clear()
    reset_networks()
    return shapes, trace


def _shape(s) -> str:
    return "[" + ", ".join(map(str, s)) + "]"


def params_problems(needed: dict[str, tuple], params: dict) -> list[str]:
    """What keeps ``params`` (saved by a run) from being the values of ``needed`` (as
    :func:`needed_params` gives them), one phrase per network or param: weights with no
    saved value, saved weights of a network that this one does not have, weights saved in
    another shape (the first one shown). Empty when every needed param has a saved value
    of its shape and every network has the weights it had in the run."""
    missing: dict[str, list[str]] = {}  # network (or param) -> its missing weights
    reshaped: dict[str, list[str]] = {}  # ... -> "w: [a] in the run, [b] here"
    for name, shape in needed.items():
        mod, sep, weight = name.partition("$$$")
        owner = mod if sep else name
        if name not in params:
            missing.setdefault(owner, []).append(weight)
        elif tuple(params[name].shape) != tuple(shape):
            reshaped.setdefault(owner, []).append(
                f"{weight + ': ' if sep else ''}{_shape(params[name].shape)} in the run, "
                f"{_shape(shape)} here")
    problems = []
    for owner, weights in missing.items():
        if weights == [""]:
            problems.append(f"param '{owner}' has no saved value")
        elif any(k.startswith(owner + "$$$") for k in params):
            n = len(weights)
            problems.append(f"network '{owner}' has {n} weight{'s' if n != 1 else ''} the "
                            f"run did not save ({weights[0]}{', ...' if n > 1 else ''})")
        else:
            problems.append(f"network '{owner}' has no saved weights ({len(weights)} "
                            f"tensor{'s' if len(weights) != 1 else ''})")
    # a network whose saved weights include some this one lacks is another architecture
    # (martingale_np's weights read by a cnp): its weights are not this network's
    nets = {n.partition("$$$")[0] for n in needed if "$$$" in n}
    for owner in sorted(nets):
        extra = [k.partition("$$$")[2] for k in params
                 if k.startswith(owner + "$$$") and k not in needed]
        if extra:
            problems.append(f"network '{owner}' of the run has {len(extra)} weight"
                            f"{'s' if len(extra) != 1 else ''} this one does not "
                            f"({extra[0]}{', ...' if len(extra) > 1 else ''}): another "
                            "architecture")
    for owner, shapes in reshaped.items():
        if shapes[0][0] == "[":  # a pyro.param
            problems.append(f"param '{owner}' is {shapes[0]}")
        else:
            n = len(shapes)
            problems.append(f"network '{owner}' has {n} weight{'s' if n != 1 else ''} of "
                            f"another shape ({shapes[0]}{', ...' if n > 1 else ''})")
    return problems


class DrawShapeMismatch(ValueError):
    """Saved draws of a latent whose shape the new data change (``problems``: one phrase
    each, naming the saved shape and the shape these data give)."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def shape_problems(post: dict, trace, lead: int = 1) -> list[str]:
    """The saved draws in ``post`` ([draws, ...]) that cannot be the latent of the same
    name in ``trace`` (a run of the model on the new data): another number of elements
    than the site's value there, once unit dims are set aside (``site_shaped``)."""
    problems = []
    for name, v in post.items():
        site = trace.nodes.get(name)
        if site is None or site["type"] != "sample":
            continue
        own = [n for n in v.shape[lead:] if n != 1]
        here = [n for n in site["value"].shape if n != 1]
        if own != here:
            problems.append(f"latent '{name}' was saved as {_shape(v.shape[lead:])} per draw; "
                            f"with these data it is {_shape(site['value'].shape)}")
    return problems


def point_draws(chains: dict, n: int) -> dict:
    """``n`` copies of the first saved draw ([1, n, ...] per site): a point estimate (a
    map run) predicted with ``n`` draws of the predictive at that point."""
    return {k: v[:1, :1].expand((1, n) + tuple(v.shape[2:])) for k, v in chains.items()}


def thinned(chains: dict, n: int) -> dict:
    """At most ``n`` draws ([1, n, ...] per site, chains flattened), evenly spaced over
    all the saved draws (every chain's); all of them when there are ``n`` or fewer."""
    out = {}
    for k, v in chains.items():
        flat = v.flatten(0, 1)
        if flat.shape[0] > n:
            idx = torch.linspace(0, flat.shape[0] - 1, n).round().long()
            flat = flat[idx]
        out[k] = flat.unsqueeze(0)
    return out


def posterior_predictive(model, chains: dict, data: dict, params: dict | None = None, *,
                         device: str = "cpu", dtype: str = "float64",
                         seed: int | None = 0, num_samples: int | None = None,
                         labels: str = "sample") -> dict:
    """One draw of every site not fixed by ``data`` per saved posterior draw.

    ``chains[name]`` is [chains, draws, ...] as written by ``bdl run`` (each site in its
    declared shape, or in Pyro's layout as runs written before that were: both are
    read); every saved latent (weights of network priors included) is conditioned on.
    The draws come out in the sites' declared shapes. Data that the model only observes
    (``y ~ ...``, never read) may be left out: they are drawn. ``num_samples``: the number
    of draws when no latent was saved (default 1000). A saved latent whose shape the new
    data change is a :class:`DrawShapeMismatch`. ``params`` maps param names
    (``pyro.param`` sites and network weights) to their fitted, constrained values; every
    param the model needs must be there in its shape (else :class:`ParamsMismatch`: a
    model changed since the run is never run on freshly initialised weights). Summed-out
    labels are drawn as the run's ``labels`` option says (``sample`` or ``map``).
    """
    # condition on every saved draw except what is re-derived or re-sampled here:
    # deterministic sites and data sites (optional data left out is predicted)
    redo = set(model.ir.deterministics) | set(model.ir.observed)
    latents = {k for k in chains if k not in redo}
    with torch_defaults(device, dtype), seeded(seed):
        post = {k: v.flatten(0, 1).to(torch.get_default_dtype())
                if v.is_floating_point() else v.flatten(0, 1)
                for k, v in chains.items() if k in latents}
        store = pyro.get_param_store()
        saved = store.get_state()  # the caller's params (a fit in this process) come back
        store.clear()
        from ..runtime import reset_networks

        reset_networks()
        try:
            kwargs = model.bind(data, may_omit=model.checked.observed_only, where="predict")
            needed, trace = needed_params(model, kwargs, {k: v[0] for k, v in post.items()})
            problems = params_problems(needed, params or {})
            if problems:
                raise ParamsMismatch(problems)
            for name, value in (params or {}).items():
                store[name] = value.to(torch.get_default_dtype())
            # labels summed out in the fit are drawn again given these data, as
            # Fit.predict does (ppl.infer.discrete), not conditioned on the saved ones
            from .discrete import enumerable_sites

            with full_data():
                summed = enumerable_sites(trace)
                post = {k: v for k, v in post.items() if k not in summed}
                # a run whose latents were all labels: drawn given these data (an empty
                # guide), not from their prior
                from .run import _nothing

                labelled = [k for k in summed if k in chains]
                guide = _nothing if not post and labelled else None
                if guide is not None and num_samples is None:  # as many as the run drew
                    num_samples = chains[labelled[0]].shape[0] * chains[labelled[0]].shape[1]
                problems = shape_problems(post, trace)
                if problems:
                    raise DrawShapeMismatch(problems)
                # saved draws in either layout (site_draws); out in the declared one
                pred = declared(site_draws(model.pyro_model, kwargs, posterior=post or None,
                                           guide=guide,
                                           num_samples=None if post else num_samples,
                                           labels=labels),
                                plate_layout(trace), lead=1)
        finally:
            store.set_state(saved)
    given = {n for n in model.ir.observed if kwargs.get(n) is not None}
    return {k: v.detach() for k, v in pred.items() if k not in post and k not in given}
