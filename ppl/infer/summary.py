"""Posterior summary table: mean, sd, 5/50/95% quantiles, split R-hat and ESS per element.

R-hat is the split Gelman-Rubin statistic and ESS the effective sample size, both from
``pyro.ops.stats`` over draws laid out as [chains, draws, ...].
"""

from __future__ import annotations

import itertools
import math

import torch
from pyro.ops.stats import effective_sample_size, split_gelman_rubin

COLUMNS = ("mean", "sd", "5%", "50%", "95%", "r_hat", "ess")


def _element_names(name: str, shape) -> list[str]:
    if len(shape) == 0:
        return [name]
    return [f"{name}[{', '.join(map(str, idx))}]"
            for idx in itertools.product(*(range(s) for s in shape))]


class Summary:
    """Rows keyed by element name (``theta[0]``, 0-based as in the language). ``point``:
    the draws are copies of one point estimate (``map``, ``svi(guide=delta)``), shown as
    a ``value`` column alone, as one draw is."""

    def __init__(self, rows: dict[str, dict[str, float]], draws: int | None = None,
                 point: bool = False):
        self.rows = rows
        self.draws = draws
        self.point = point

    def __getitem__(self, key: str) -> dict[str, float]:
        if key not in self.rows:
            elements = [k for k in self.rows if k.startswith(f"{key}[")]
            hint = (f"; '{key}' has elements {elements[0]} ... {elements[-1]}" if elements
                    else "")
            raise KeyError(f"no row '{key}' in the summary{hint}")
        return self.rows[key]

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def __iter__(self):
        return iter(self.rows)

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {k: dict(v) for k, v in self.rows.items()}

    def to_csv(self, path=None) -> str:
        """The table as CSV text; written to ``path`` too when one is given."""
        lines = ["name," + ",".join(COLUMNS)]
        for k, row in self.rows.items():
            lines.append(f'"{k}",' + ",".join(f"{row[c]:.6g}" for c in COLUMNS))
        text = "\n".join(lines) + "\n"
        if path is not None:
            from pathlib import Path

            Path(path).write_text(text)
        return text

    def __str__(self) -> str:
        if not self.rows:
            return "(no latent or generated sites to summarise)"
        width = max([len(k) for k in self.rows] + [4])
        if self.draws == 1 or self.point:
            # one draw, or copies of one (a point estimate, as Stan's optimize gives):
            # spread and diagnostics do not exist, so the table shows the value alone
            out = [f"{'':<{width}} {'value':>9}"]
            out += [f"{k:<{width}} {row['mean']:>9.3g}" for k, row in self.rows.items()]
            return "\n".join(out)
        head = f"{'':<{width}} " + " ".join(f"{c:>9}" for c in COLUMNS)
        out = [head]
        for k, row in self.rows.items():
            cells = []
            for c in COLUMNS:
                v = row[c]
                cells.append(f"{v:>9.0f}" if c == "ess" and math.isfinite(v) else f"{v:>9.3g}")
            out.append(f"{k:<{width}} " + " ".join(cells))
        return "\n".join(out)

    __repr__ = __str__


def summarise(chains: dict[str, torch.Tensor], names: list[str],
              point: bool = False) -> Summary:
    """``chains[name]`` is [chains, draws, *shape]. ``point``: the fit is a point estimate
    (``map``, ``svi(guide=delta)``); its table shows values alone when every element is
    the same in every draw (labels drawn from their conditional posterior vary, and then
    the full table is shown)."""
    rows: dict[str, dict[str, float]] = {}
    sizes = set()
    constant = True
    for name in names:
        x = chains[name].detach().to(torch.float64).cpu()
        n_chains, n_draws = x.shape[:2]
        sizes.add(n_chains * n_draws)
        shape = x.shape[2:]
        if x.numel() == 0:  # an empty site (Stan's N_tilde = 0: x_new given as []): no rows
            continue
        flat = x.reshape(n_chains, n_draws, -1)
        pooled = flat.reshape(n_chains * n_draws, -1)
        q = torch.quantile(pooled, torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64), dim=0)
        if n_draws >= 4:
            rhat = split_gelman_rubin(flat, chain_dim=0, sample_dim=1)
            # a constant element (the 1 of a Cholesky factor's corner) has no ESS, and
            # Pyro's estimate lets its NaN spread to the other elements: leave it out
            ess = torch.full((flat.shape[-1],), math.nan, dtype=torch.float64)
            varying = pooled.std(0) > 0
            if bool(varying.any()):
                ess[varying] = effective_sample_size(flat[..., varying], chain_dim=0,
                                                     sample_dim=1)
            # the autocorrelation estimate can go negative on a few draws: no estimate
            ess = torch.where(ess > 0, ess, torch.full_like(ess, math.nan))
        else:
            rhat = torch.full((flat.shape[-1],), math.nan)
            ess = torch.full((flat.shape[-1],), math.nan)
        mean = pooled.mean(0)
        same = (pooled == pooled[:1]).all(0)
        constant = constant and bool(same.all())
        sd = pooled.std(0) if pooled.shape[0] > 1 else torch.zeros_like(mean)
        sd = torch.where(same, torch.zeros_like(sd), sd)  # not a rounding error's 1e-17
        for j, el in enumerate(_element_names(name, shape)):
            rows[el] = {
                "mean": float(mean[j]), "sd": float(sd[j]), "5%": float(q[0, j]),
                "50%": float(q[1, j]), "95%": float(q[2, j]), "r_hat": float(rhat[j]),
                "ess": float(ess[j]),
            }
    return Summary(rows, sizes.pop() if len(sizes) == 1 else None,
                   point=point and constant and bool(rows))
