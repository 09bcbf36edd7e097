"""Posterior predictive from saved draws (``bdl predict``)."""

from __future__ import annotations

import pyro
import torch

from ..runtime.functions import full_data
from ..runtime.shapes import declared
from .draws import plate_layout, site_draws
from .rng import seeded
from .run import torch_defaults


def posterior_predictive(model, chains: dict, data: dict, params: dict | None = None, *,
                         device: str = "cpu", dtype: str = "float64",
                         seed: int | None = 0) -> dict:
    """One draw of every site not fixed by ``data`` per saved posterior draw.

    ``chains[name]`` is [chains, draws, ...] as written by ``bdl run`` (each site in its
    declared shape, or in Pyro's layout as runs written before that were: both are
    read); every saved latent (weights of network priors included) is conditioned on.
    The draws come out in the sites' declared shapes. ``params`` maps param names
    (``pyro.param`` sites and network weights) to their fitted, constrained values.
    """
    # condition on every saved draw except what is re-derived or re-sampled here:
    # deterministic sites and data sites (optional data left out is predicted)
    redo = set(model.ir.deterministics) | set(model.ir.observed)
    latents = {k for k in chains if k not in redo}
    with torch_defaults(device, dtype), seeded(seed):
        post = {k: v.reshape((-1,) + tuple(v.shape[2:])).to(torch.get_default_dtype())
                if v.is_floating_point() else v.reshape((-1,) + tuple(v.shape[2:]))
                for k, v in chains.items() if k in latents}
        store = pyro.get_param_store()
        saved = store.get_state()  # the caller's params (a fit in this process) come back
        store.clear()
        from ..runtime import reset_networks

        reset_networks()
        try:
            for name, value in (params or {}).items():
                store[name] = value.to(torch.get_default_dtype())
            kwargs = model.bind(data)
            # labels summed out in the fit are drawn again given these data, as
            # Fit.predict does (ppl.infer.discrete), not conditioned on the saved ones
            from .discrete import enumerable_sites

            with full_data():
                with torch.random.fork_rng(devices=[]):  # the draws below are unchanged
                    trace = pyro.poutine.trace(model.pyro_model).get_trace(**kwargs)
                labels = enumerable_sites(trace)
                post = {k: v for k, v in post.items() if k not in labels}
                # saved draws in either layout (site_draws); out in the declared one
                pred = declared(site_draws(model.pyro_model, kwargs, posterior=post or None),
                                plate_layout(trace), lead=1)
        finally:
            store.set_state(saved)
    given = {n for n in model.ir.observed if kwargs.get(n) is not None}
    return {k: v.detach() for k, v in pred.items() if k not in post and k not in given}
