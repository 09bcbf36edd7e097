"""ArviZ interoperability: a fit as an ArviZ DataTree (optional extra ``arviz``).

Groups: ``posterior`` (latent and deterministic sites, [chain, draw, ...]) and
``observed_data`` (the observed data sites); the posterior group's attrs hold
``inference_library`` ("pyro") and ``bdl_method``. Written to ``posterior.nc`` by
``bdl run --arviz``.
"""

from __future__ import annotations


class ArvizMissing(ImportError):
    pass


def to_inference_data(fit):
    try:
        import arviz_base as az
    except ImportError:
        raise ArvizMissing("ArviZ export needs the optional extra: pip install 'ppl[arviz]' "
                           "(arviz-base, xarray, h5netcdf, h5py)") from None
    posterior = {k: v.detach().cpu().numpy() for k, v in fit.chains.items()}
    observed = {}
    for name in fit.observed:
        v = fit.kwargs.get(name)
        if v is not None and hasattr(v, "detach"):
            observed[name] = v.detach().cpu().numpy()
    groups = {"posterior": posterior}
    if observed:
        groups["observed_data"] = observed
    # attrs are per group in arviz-base (a flat dict is dropped with a UserWarning); the
    # posterior group's, as ArviZ's own converters keep inference_library
    attrs = {"posterior": {"inference_library": "pyro", "bdl_method": fit.method}}
    return az.from_dict(groups, attrs=attrs)
