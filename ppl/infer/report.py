"""What ``bdl run`` and a generated module run on its own print after a fit."""

from __future__ import annotations

from .fit import Fit
from .summary import Summary


def point_estimates(params: dict, max_size: int = 8) -> dict:
    """Small fitted ``pyro.param`` values by name (a ``param``, a learned Hurst index):
    what a user reads off a fit. Network weights (``net$$$...``) and autoguide parameters
    (``AutoNormal.locs...``) are the fit's machinery, kept in params.pt only."""
    out = {}
    for k, v in params.items():
        if "$$$" in k or k.startswith("Auto") or v.numel() > max_size:
            continue
        out[k] = v.detach().cpu().tolist()
    return out


def _short(v) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(_short(x) for x in v) + "]"
    return f"{v:.4g}"


def fit_report(fit: Fit, summary: Summary | None = None) -> str:
    """The posterior summary, then the final ELBO (svi/map) and the point estimates."""
    lines = [str(summary if summary is not None else fit.summary())]
    if fit.elbo:
        tail = fit.elbo[-max(1, len(fit.elbo) // 10):]
        lines.append(f"\nfinal ELBO: {fit.elbo[-1]:.6g} (mean of last 10%: "
                     f"{sum(tail) / len(tail):.6g})")
    points = point_estimates(fit.params)
    if points:
        lines.append("\npoint estimates (param and construct-learned values):")
        lines += [f"  {k} = {_short(v)}" for k, v in points.items()]
    return "\n".join(lines)
