"""What ``bdl run`` and a generated module run on its own print after a fit."""

from __future__ import annotations

import math

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


# Stan's thresholds (Vehtari et al. 2021, "Rank-normalization, folding, and
# localization"), applied here to the classic split R-hat and ESS of the summary: R-hat
# above 1.01 means the chains disagree; fewer than 100 effective draws per chain make the
# tail quantiles and the R-hat itself unreliable.
RHAT_MAX = 1.01
ESS_MIN = 100  # per chain


def optimiser_warnings(fit: Fit) -> list[str]:
    """The warning of an svi/map fit that did not converge: its ELBO ended lower than it
    started. The mean over the last 10% of the steps is compared with the first step's
    ELBO (the starting guide), allowing 4 standard deviations of the last steps' ELBOs
    (the noise of a stochastic ELBO) and 1 nat: an optimiser that diverged (a learning
    rate too large, ``map(lr=50)`` of a Gamma-Poisson model ends at lam = 6e21) or
    oscillates far from its optimum ends there; a converging one ends higher. (A NaN or
    infinite ELBO is an error during the fit, ``ppl.infer.run``.)"""
    elbo = fit.elbo or []
    if fit.method not in ("svi", "map") or len(elbo) < 10:
        return []
    last = elbo[-max(2, len(elbo) // 10):]
    mean = sum(last) / len(last)
    sd = math.sqrt(sum((x - mean) ** 2 for x in last) / (len(last) - 1))
    if mean >= elbo[0] - 4 * sd - 1.0:
        return []
    lr = fit.options.get("lr")
    return [f"the fit did not converge: the ELBO fell from {elbo[0]:.4g} at the first step "
            f"to {mean:.4g} (mean of the last {len(last)} steps); the estimates are not "
            f"a {'posterior mode' if fit.method == 'map' else 'posterior approximation'}: "
            + (f"lower lr (now {lr:g})" if lr else "lower lr")]


def sampler_warnings(fit: Fit, summary: Summary) -> list[str]:
    """Stan-style warnings on a sampler's draws: divergent transitions, R-hat above
    :data:`RHAT_MAX` (two chains or more) and ESS below :data:`ESS_MIN` per chain, naming the worst
    quantity. Network weights are counted apart: a network is unchanged when its hidden
    units are permuted, so its weights have many equivalent modes and their R-hat says
    little; the function values (deterministic sites) are what to check. An svi/map fit
    gets :func:`optimiser_warnings` instead."""
    out = optimiser_warnings(fit)
    if fit.divergences:
        out.append(f"{fit.divergences} divergent transitions: the sampler missed part of "
                   "the posterior; raise target_accept or reparametrise")
    if fit.method not in ("nuts", "hmc", "sghmc") or not summary.rows or not fit.chains:
        return out
    chains = next(iter(fit.chains.values())).shape[0]
    ess_min = ESS_MIN * chains
    checks = [("ess", ess_min, min, f"an effective sample size below {ess_min}"
               + (f" ({ESS_MIN} per chain)" if chains > 1 else ""))]
    if chains >= 2:
        checks.insert(0, ("r_hat", RHAT_MAX, max, f"R-hat above {RHAT_MAX}"))
    for column, limit, worst_of, what in checks:
        flagged = {k: row[column] for k, row in summary.rows.items()
                   if math.isfinite(row[column])
                   and (row[column] > limit if column == "r_hat" else row[column] < limit)}
        weights = {k for k in flagged if "." in k.split("[")[0]}  # f.W0[0, 1]
        own = {k: v for k, v in flagged.items() if k not in weights}
        if own:
            worst = worst_of(own, key=own.get)
            have = "quantity has" if len(own) == 1 else "quantities have"
            text = (f"{len(own)} {have} {what} (worst: {worst}, "
                    f"{own[worst]:.3g}): run longer (more warmup and samples)")
            if weights:
                text += f"; {len(weights)} network weight{'s' * (len(weights) > 1)} too"
            out.append(text)
        elif weights:
            have = "weight has" if len(weights) == 1 else "weights have"
            out.append(f"{len(weights)} network {have} {what}, which the symmetry of "
                       "a network under permuting its hidden units makes common: check the "
                       "function values (deterministic sites) instead")
    return out


def fit_report(fit: Fit, summary: Summary | None = None) -> str:
    """The posterior summary, then the final ELBO (svi/map) and the point estimates."""
    lines = [str(summary if summary is not None else fit.summary())]
    if fit.elbo:
        tail = fit.elbo[-max(1, len(fit.elbo) // 10):]
        lines.append(f"\nfinal ELBO: {fit.elbo[-1]:.6g} (mean of last 10%: "
                     f"{sum(tail) / len(tail):.6g})")
    meta = getattr(fit, "meta", None) or {}
    if "best_step" in meta:  # infer meta(val_episodes=...): the checkpoint it kept
        lines.append(f"\nmeta-validation ({meta['val_episodes']} episodes, by "
                     f"{meta['select']}): kept step {meta['best_step']}, val err "
                     f"{meta['val_err']:.4g}, val nll {meta['val_nll']:.4g}")
    points = point_estimates(fit.params)
    if points:
        lines.append("\npoint estimates (param and construct-learned values):")
        lines += [f"  {k} = {_short(v)}" for k, v in points.items()]
    return "\n".join(lines)
