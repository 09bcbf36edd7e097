"""Plots for a run folder, when matplotlib is installed (optional extra ``plots``).

MCMC: trace and density per scalar element (the first 12); SVI/MAP: the ELBO curve;
regression-shaped models (a predicted 1-D site beside a 1-D real data argument of the
same length): the posterior predictive mean with 50% and 90% bands over that input (not
for a single draw, such as ``map``'s generated quantities by default, nor for an output
of no points).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MAX_ELEMENTS = 12


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def write_plots(fit, out: Path, data_args: dict, predicted: list[str] | None = None
                ) -> list[str] | None:
    """Write PNGs into ``out``; None when matplotlib is not installed.

    ``predicted``: the sites drawn from the posterior predictive (optional data left
    out); ``data_args``: the covariates they may be plotted against.
    """
    plt = _pyplot()
    if plt is None:
        return None
    written = []
    if fit.elbo:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(np.arange(1, len(fit.elbo) + 1), fit.elbo, lw=0.8)
        ax.set_xlabel("step")
        ax.set_ylabel("ELBO")
        ax.set_title(f"{fit.method}: ELBO")
        fig.tight_layout()
        fig.savefig(out / "elbo.png", dpi=110)
        plt.close(fig)
        written.append("elbo.png")
    elements = []
    for name in fit.latents:
        v = fit.chains.get(name)
        if v is None:
            continue
        flat = v.detach().cpu().numpy().reshape(v.shape[0], v.shape[1], -1)
        for j in range(flat.shape[-1]):
            label = name if flat.shape[-1] == 1 else f"{name}[{j}]"
            elements.append((label, flat[:, :, j]))
    elements = elements[:MAX_ELEMENTS]
    from .infer.methods import point_estimate

    # a point estimate's draws are copies of one value: nothing to trace
    if elements and fit.chains and next(iter(fit.chains.values())).shape[1] > 1 \
            and not point_estimate(fit.method, fit.options):
        fig, axes = plt.subplots(len(elements), 2, figsize=(9, 1.8 * len(elements)),
                                 squeeze=False)
        for (label, draws), (ax_t, ax_d) in zip(elements, axes, strict=True):
            for c in range(draws.shape[0]):
                ax_t.plot(draws[c], lw=0.5)
                ax_d.hist(draws[c], bins=40, density=True, histtype="step")
            ax_t.set_ylabel(label)
        axes[0, 0].set_title("trace")
        axes[0, 1].set_title("density")
        fig.tight_layout()
        fig.savefig(out / "trace.png", dpi=90)
        plt.close(fig)
        written.append("trace.png")
    # 1-D inputs: a vector, or a one-column matrix (a network's x_new: real[M, 1])
    inputs = {k: np.asarray(v.detach().cpu()).reshape(-1) for k, v in data_args.items()
              if hasattr(v, "dim") and v.is_floating_point()
              and (v.dim() == 1 or (v.dim() == 2 and v.shape[1] == 1))}
    for name in fit.deterministics if predicted is None else predicted:
        if name not in fit.chains:
            continue
        draws = fit.samples[name].detach().cpu().numpy()
        if draws.ndim != 2 or draws.shape[0] < 2 or draws.shape[1] == 0:
            continue  # one draw (map's default) or no points: no mean or bands to show
        x = next((v for k, v in inputs.items() if len(v) == draws.shape[1] and k != name), None)
        if x is None:
            continue
        order = np.argsort(x)
        q = np.quantile(draws[:, order], [0.05, 0.25, 0.5, 0.75, 0.95], axis=0)
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.fill_between(x[order], q[0], q[4], alpha=0.2, label="90%")
        ax.fill_between(x[order], q[1], q[3], alpha=0.4, label="50%")
        ax.plot(x[order], draws[:, order].mean(0), lw=1.2, label="mean")
        ax.set_title(f"posterior predictive: {name}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / f"predictive_{name}.png", dpi=110)
        plt.close(fig)
        written.append(f"predictive_{name}.png")
    return written
