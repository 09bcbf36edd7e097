"""Priors over the weights of a network, and their matching to a Gaussian process.

Maths: METHODS.md §1 (Tran, Rossi, Milios, Filippone, JMLR 2022).

The network is the MLP of ``rt.nn.MLP`` evaluated functionally with fan-in scaling,
h <- act(W h / sqrt(n_in) + b), so a prior scale means the same at every width. The CNN
of ``rt.nn.CNN`` is scaled the same way, a convolution's fan-in being C_in * k * k:
h <- act(conv(h, W) / sqrt(C_in k^2) + b) [-> max-pool], then the flattened features go
through the linear output layer. Every weight is a Pyro sample site (``f.W0``, ``f.b0``,
..., one per layer, convolutions first), so NUTS, SVI and SGHMC all apply:

* FG  ``gaussian_prior(s)``:        W_l, b_l ~ N(0, s^2).
* FH  ``hierarchical_prior(a, b)``: v_l ~ IG(a, b) (separately for W_l and b_l),
  W_l | v_l ~ N(0, v_l).
* GPiG ``gp_prior(k, inputs=x)``:  W_l ~ N(0, softplus(rho_W,l)^2), b_l likewise, with
  psi = {rho} fitted by Wasserstein-1 matching to GP(0, k).
* GPiH ``gp_prior(k, inputs=x, family="hierarchical")``: v_l ~ IG(alpha_l, beta_l),
  alpha, beta = softplus(raw), fitted the same way; the variance is drawn per function
  sample during matching (the reference shares one draw per batch).
* ``scale_mixture_prior(a, b)``: hidden layers N(0, s^2); the output layer's variance
  v ~ IG(a, b) shared by W_L and b_L (a Student-t process in the wide limit).

Variance sites carry ``infer={"bdl_gibbs": ...}`` naming the weights they scale, so that
SGHMC can update them by their conjugate conditional IG(a + n/2, b + ||W||^2 / 2).

Matching (``match_gp``): minimise over psi the W1 distance between GP and network function
values at random measurement sets, W1 estimated in its dual form by a critic with a
gradient penalty (WGAN-GP, lambda = 10), network samples reparameterised so the gradient
flows to psi, RMSprop on psi, GP samples by a float64 Cholesky with jitter. Unlike the
reference, the critic is warm-started across outer steps (``critic_init_steps`` steps at
the first, ``critic_steps`` afterwards). The fitted psi is cached on disk under
``$BDL_CACHE_DIR`` (default ``~/.cache/bdl``) keyed by network, kernel, inputs, settings
and seed.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ..constructs.network_priors import FAMILIES, MEASURES
from .errors import ArgumentError
from .kernels import Kernel
from .nn import ACT_FUNCTIONS

_CACHE_VERSION = 2  # 2: results carry psi_trace


# ---- the functional network ---------------------------------------------------------
@dataclass(frozen=True)
class ConvArch:
    """The shape of an ``rt.nn.CNN``: input (C, H, W), channels (C, c_1, ..., c_L), the
    output width, the (odd) kernel size and the max-pooling factor after each convolution.

    Where an MLP is described by its layer sizes ``[in, hidden..., out]``, a CNN is
    described by this; every function below that takes ``sizes`` takes either."""

    in_shape: tuple[int, int, int]
    channels: tuple[int, ...]
    out_dim: int
    kernel_size: int = 3
    pool: int = 1

    def features(self) -> int:
        """Flattened features entering the output layer: c_L * H' * W'."""
        h, w = self.in_shape[1:]
        for _ in self.channels[1:]:
            h, w = h // self.pool, w // self.pool
        return self.channels[-1] * h * w

    def layer_shapes(self) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
        """(W shape, b shape) per layer: [c_out, c_in, k, k] per convolution, then
        [out, features] for the output layer."""
        k = self.kernel_size
        shapes = [((c_out, c_in, k, k), (c_out,))
                  for c_in, c_out in zip(self.channels[:-1], self.channels[1:], strict=True)]
        return shapes + [((self.out_dim, self.features()), (self.out_dim,))]

    def describe(self) -> dict:
        return {"cnn": list(self.in_shape), "channels": list(self.channels),
                "out": self.out_dim, "kernel_size": self.kernel_size, "pool": self.pool}


def _layer_shapes(sizes) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    if isinstance(sizes, ConvArch):
        return sizes.layer_shapes()
    return [((n_out, n_in), (n_out,)) for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True)]


def structure(net) -> tuple[list[int] | ConvArch, object, str]:
    """Layer sizes [in, hidden..., out] and the activation of an ``rt.nn.MLP``; for an
    ``rt.nn.CNN`` its :class:`ConvArch` in place of the sizes."""
    from .nn import CNN

    sizes, act, act_name = [], None, "tanh"
    if isinstance(net, CNN):
        for layer in net.features:
            if type(layer) in ACT_FUNCTIONS:
                act, act_name = ACT_FUNCTIONS[type(layer)], type(layer).__name__.lower()
                break
        arch = ConvArch(net.in_shape, tuple(net.channels), net.out_dim, net.kernel_size,
                        net.pool)
        return arch, act, act_name
    for layer in net.modules():
        if isinstance(layer, nn.Linear):
            if not sizes:
                sizes.append(layer.in_features)
            sizes.append(layer.out_features)
        elif type(layer) in ACT_FUNCTIONS and act is None:
            act, act_name = ACT_FUNCTIONS[type(layer)], type(layer).__name__.lower()
    if not sizes:
        raise TypeError("a network prior needs a network built by mlp(...) or cnn(...)")
    return sizes, (act or torch.tanh), act_name


def forward(x: torch.Tensor, weights, act, arch: ConvArch | None = None) -> torch.Tensor:
    """h <- act(h W^T / sqrt(n_in) + b), no activation after the last layer.

    ``weights`` is a list of (W [..., out, in], b [..., out]); leading batch dimensions of
    the weights (draws) come first in the result: x [N, in] -> [..., N, out]. With a
    :class:`ConvArch` the network is that CNN (:func:`conv_forward`).
    """
    if arch is not None:
        return conv_forward(x, weights, act, arch)
    h = x.to(weights[0][0].dtype)
    last = len(weights) - 1
    for i, (w, b) in enumerate(weights):
        h = torch.matmul(h, w.transpose(-1, -2)) / math.sqrt(w.shape[-1]) + b.unsqueeze(-2)
        if i < last:
            h = act(h)
    return h


def conv_forward(x: torch.Tensor, weights, act, arch: ConvArch) -> torch.Tensor:
    """The CNN with fan-in scaling: per convolution h <- act(conv(h, W) / sqrt(C_in k^2)
    + b) (padding k // 2) then max-pooling by ``arch.pool``; then the flattened features
    F go through out = h W^T / sqrt(F) + b.

    x [..., C, H, W]; the weights may carry the same leading draw dimensions S on every
    layer (W [S..., c_out, c_in, k, k]); all draws run in one grouped convolution.
    Returns [S..., ..., out]."""
    *convs, (w_out, b_out) = weights
    draws = w_out.shape[:-2]
    s = math.prod(draws)
    lead = x.shape[:-3]
    h = x.reshape(-1, *arch.in_shape).to(w_out.dtype)
    n = h.shape[0]
    # draw d owns channels [d*C, (d+1)*C) so that groups=s convolves each with its own W
    h = h.repeat(1, s, 1, 1)
    pad = arch.kernel_size // 2
    for w, b in convs:
        c_out, c_in, k, _ = w.shape[-4:]
        h = torch.nn.functional.conv2d(h, w.reshape(s * c_out, c_in, k, k), padding=pad,
                                       groups=s) / math.sqrt(c_in * k * k)
        h = act(h + b.reshape(1, s * c_out, 1, 1))
        if arch.pool > 1:
            h = torch.nn.functional.max_pool2d(h, arch.pool)
    feats = h.reshape(n, s, -1).transpose(0, 1).reshape(*draws, n, -1)
    out = torch.matmul(feats, w_out.transpose(-1, -2)) / math.sqrt(feats.shape[-1])
    out = out + b_out.unsqueeze(-2)
    return out.reshape(*draws, *lead, out.shape[-1])


class BayesianNetwork:
    """A network whose weights are the values of Pyro sample sites; ``f(x)`` applies it."""

    def __init__(self, name, sizes, act, weights):
        self.name, self.sizes, self.act, self.weights = name, sizes, act, weights
        self.arch = sizes if isinstance(sizes, ConvArch) else None
        if self.arch is not None:
            self.in_dim, self.out_dim = None, self.arch.out_dim
        else:
            self.in_dim, self.out_dim = sizes[0], sizes[-1]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.arch is not None:
            from .nn import check_image_input
            check_image_input(x, self.arch.in_shape)
        elif x.dim() == 0 or x.shape[-1] != self.in_dim:
            raise ValueError(f"network expects {self.in_dim} input features, got shape "
                             f"{tuple(x.shape)}")
        return forward(x, self.weights, self.act, self.arch)


def _t(v, argument: str | None = None) -> torch.Tensor:
    """A number or tensor as a tensor of the default dtype and device; anything else is
    an :class:`ArgumentError` at the prior's ``argument`` (a kernel given for a scale)."""
    like = torch.empty(0)
    if isinstance(v, torch.Tensor):
        return v.to(device=like.device, dtype=like.dtype)
    if isinstance(v, bool) or not isinstance(v, numbers.Real):  # numpy scalars too
        raise ArgumentError(f"{argument or 'this argument'} must be a number, not "
                            f"{type(v).__name__}", argument=argument)
    return torch.tensor(float(v), dtype=like.dtype, device=like.device)


def _layer_sites(name, sizes):
    for i, (ws, bs) in enumerate(_layer_shapes(sizes)):
        yield i, f"{name}.W{i}", ws, f"{name}.b{i}", bs


def _normal(site, scale, shape):
    return pyro.sample(site, dist.Normal(_t(0.0), scale).expand(shape).to_event(len(shape)))


def _ig_variance(site, a, b, targets):
    return pyro.sample(site, dist.InverseGamma(a, b),
                       infer={"bdl_gibbs": {"alpha": a, "beta": b, "targets": targets}})


def _finish(name, net, sizes, act, weights):
    if isinstance(net, BayesianNetwork):
        raise ValueError(f"network '{name}' already has a prior")
    return BayesianNetwork(name, sizes, act, weights)


# ---- the priors -----------------------------------------------------------------------
def gaussian_prior(name: str, net, scale=1.0) -> BayesianNetwork:
    """FG: every W_l and b_l ~ N(0, scale^2) (METHODS.md §1)."""
    sizes, act, _ = structure(net)
    s = _t(scale, "scale")
    weights = [(_normal(wn, s, ws), _normal(bn, s, bs))
               for _, wn, ws, bn, bs in _layer_sites(name, sizes)]
    return _finish(name, net, sizes, act, weights)


def hierarchical_prior(name: str, net, a=1.0, b=1.0) -> BayesianNetwork:
    """FH: per layer v ~ IG(a, b) for W_l and (separately) for b_l, W_l | v ~ N(0, v)."""
    sizes, act, _ = structure(net)
    a, b = _t(a, "a"), _t(b, "b")
    weights = []
    for i, wn, ws, bn, bs in _layer_sites(name, sizes):
        vw = _ig_variance(f"{name}.vW{i}", a, b, [wn])
        vb = _ig_variance(f"{name}.vb{i}", a, b, [bn])
        weights.append((_normal(wn, vw.sqrt(), ws), _normal(bn, vb.sqrt(), bs)))
    return _finish(name, net, sizes, act, weights)


def scale_mixture_prior(name: str, net, a=1.0, b=1.0, scale=1.0) -> BayesianNetwork:
    """Hidden layers N(0, scale^2); the output layer's variance v ~ IG(a, b) is shared by
    W_L and b_L, W_L, b_L | v ~ N(0, v) (METHODS.md §1, scale mixture)."""
    sizes, act, _ = structure(net)
    s, a, b = _t(scale, "scale"), _t(a, "a"), _t(b, "b")
    layers = list(_layer_sites(name, sizes))
    weights = [(_normal(wn, s, ws), _normal(bn, s, bs)) for _, wn, ws, bn, bs in layers[:-1]]
    _, wn, ws, bn, bs = layers[-1]
    v = _ig_variance(f"{name}.v", a, b, [wn, bn])
    weights.append((_normal(wn, v.sqrt(), ws), _normal(bn, v.sqrt(), bs)))
    return _finish(name, net, sizes, act, weights)


def gp_prior(name: str, net, kernel, inputs, family: str = "gaussian", steps: int = 200,
             samples: int = 128, points: int = 100, critic_steps: int = 20,
             critic_init_steps: int = 200, lr: float = 0.05, measure: str = "data",
             seed: int = 0, cache: bool = True, critic_lr: float = 0.02,
             init_scale: float = 1.0, share_samples: bool = False,
             min_shape: float = 0.0) -> BayesianNetwork:
    """GPiG / GPiH: the prior of ``family`` whose psi is fitted to GP(0, kernel) by
    :func:`match_gp` (memoised in memory and on disk)."""
    if not isinstance(kernel, Kernel):
        raise ArgumentError(f"gp_prior's kernel must be a kernel such as rbf(lengthscale=1), "
                            f"not {type(kernel).__name__}", argument="kernel")
    sizes, act, act_name = structure(net)
    # defaults stay out of the settings so that caches written before the option existed
    # keep their keys
    extra = {}
    if float(critic_lr) != 0.02:
        extra["critic_lr"] = float(critic_lr)
    if float(init_scale) != 1.0:
        extra["init_scale"] = float(init_scale)
    if share_samples:
        extra["share_samples"] = True
    if float(min_shape) != 0.0:
        extra["min_shape"] = float(min_shape)
    psi = fitted_psi(sizes, act_name, kernel, inputs, family=family, steps=int(steps),
                     samples=int(samples), points=int(points), critic_steps=int(critic_steps),
                     critic_init_steps=int(critic_init_steps), lr=float(lr), measure=measure,
                     seed=int(seed), cache=bool(cache), **extra)["psi"]
    sp = nn.functional.softplus
    weights = []
    for i, wn, ws, bn, bs in _layer_sites(name, sizes):
        if family == "gaussian":
            sw, sb = sp(_t(psi["rho_W"][i])), sp(_t(psi["rho_b"][i]))
        else:
            aw, bw = sp(_t(psi["a_W"][i])) + float(min_shape), sp(_t(psi["b_W"][i]))
            ab, bb = sp(_t(psi["a_b"][i])) + float(min_shape), sp(_t(psi["b_b"][i]))
            sw = _ig_variance(f"{name}.vW{i}", aw, bw, [wn]).sqrt()
            sb = _ig_variance(f"{name}.vb{i}", ab, bb, [bn]).sqrt()
        weights.append((_normal(wn, sw, ws), _normal(bn, sb, bs)))
    return _finish(name, net, sizes, act, weights)


# ---- matching to a GP -------------------------------------------------------------------
# the reference (Tran et al.'s GaussianMLPReparameterization) starts its raw rho at 1, so
# sigma = softplus(1) on every layer; ``gp_prior(init_scale=...)`` reproduces that start
REFERENCE_INIT_SCALE = math.log1p(math.e)


def _init_psi(n_layers: int, family: str, dtype, device, scale: float = 1.0,
              min_shape: float = 0.0) -> dict[str, torch.Tensor]:
    """Start at N(0, scale^2) on every layer (scale 1: FG), or at IG(2, scale^2) (prior
    mean variance scale^2; the shape is min_shape + softplus(raw), min_shape < 2)."""
    def inv_sp(v):
        return torch.full((n_layers,), math.log(math.expm1(v)), dtype=dtype, device=device)
    if not scale > 0:
        raise ArgumentError(f"gp_prior init_scale must be positive, not {scale}",
                            argument="init_scale")
    if family == "gaussian":
        return {"rho_W": inv_sp(scale), "rho_b": inv_sp(scale)}
    if family == "hierarchical":
        v = scale * scale
        if not 0.0 <= min_shape < 2.0:
            raise ArgumentError(f"gp_prior min_shape must be in [0, 2), not {min_shape}",
                                argument="min_shape")
        a = 2.0 - min_shape
        return {"a_W": inv_sp(a), "b_W": inv_sp(v), "a_b": inv_sp(a), "b_b": inv_sp(v)}
    raise ArgumentError(f"gp_prior family must be one of {', '.join(FAMILIES)}, "
                        f"not {family!r}", argument="family")


def prior_weights(psi: dict, family: str, sizes: list[int] | ConvArch, n: int,
                  generator: torch.Generator | None = None, min_shape: float = 0.0):
    """n reparameterised weight draws [(W [n, out, in], b [n, out]) per layer] from the
    prior of ``family`` with hyperparameters psi (variances drawn per function sample;
    hierarchical: v ~ IG(min_shape + softplus(a), softplus(b)))."""
    sp = nn.functional.softplus
    ref = next(iter(psi.values()))
    weights = []
    for i, (ws, bs) in enumerate(_layer_shapes(sizes)):
        ew = torch.randn(n, *ws, dtype=ref.dtype, device=ref.device, generator=generator)
        eb = torch.randn(n, *bs, dtype=ref.dtype, device=ref.device, generator=generator)
        if family == "gaussian":
            sw = sp(psi["rho_W"][i]).expand(n)
            sb = sp(psi["rho_b"][i]).expand(n)
        else:  # v = 1 / Gamma(alpha, beta) ~ IG(alpha, beta), reparameterised (implicit grads)
            sw = dist.Gamma(sp(psi["a_W"][i]) + min_shape,
                            sp(psi["b_W"][i])).rsample((n,)).rsqrt()
            sb = dist.Gamma(sp(psi["a_b"][i]) + min_shape,
                            sp(psi["b_b"][i])).rsample((n,)).rsqrt()
        weights.append((sw.reshape(n, *[1] * len(ws)) * ew, sb[:, None] * eb))
    return weights


def _as_matrix(x: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(-1) if x.dim() == 1 else x


def measurement_set(inputs: torch.Tensor, m: int, measure: str,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """M points: ``data`` -- 70% random training inputs, 30% uniform in their box;
    ``grid`` -- an M-point grid over [min, max] of 1-D inputs (fixed)."""
    x = _as_matrix(inputs)
    lo, hi = x.min(0).values, x.max(0).values
    if measure == "grid":
        if x.shape[-1] != 1:
            raise ArgumentError("measure=\"grid\" needs 1-D inputs", argument="measure")
        return torch.linspace(float(lo[0]), float(hi[0]), m, dtype=x.dtype,
                              device=x.device).unsqueeze(-1)
    if measure not in MEASURES:
        raise ArgumentError(f"measure must be one of {', '.join(MEASURES)}, not {measure!r}",
                            argument="measure")
    n_data = min(int(round(0.7 * m)), x.shape[0])
    idx = torch.randperm(x.shape[0], device=x.device, generator=generator)[:n_data]
    u = torch.rand(m - n_data, x.shape[-1], dtype=x.dtype, device=x.device, generator=generator)
    return torch.cat([x[idx], lo + (hi - lo) * u])


def gp_sampler(kernel, xm: torch.Tensor, jitter: float = 1e-6):
    """n draws [n, M] of GP(0, k) at xm: Cholesky of K + jitter I in float64, jitter
    raised tenfold until it succeeds."""
    k = kernel(xm.double())
    k = k.to(torch.float64)
    eye = torch.eye(k.shape[-1], dtype=torch.float64, device=k.device)
    for _ in range(8):
        chol, info = torch.linalg.cholesky_ex(k + jitter * eye)
        if int(info) == 0:
            break
        jitter *= 10
    else:
        raise ValueError("the GP covariance at the measurement set is not positive definite")

    def draw(n, generator=None):
        z = torch.randn(k.shape[-1], n, dtype=torch.float64, device=k.device,
                        generator=generator)
        return (chol @ z).T.to(xm.dtype)
    return draw


def make_critic(m: int, hidden: int = 200, dtype=None, device=None) -> nn.Module:
    """The reference critic: M -> 200 -> 200 -> 1 with softplus activations.

    The output layer starts at zero (a constant critic): the gradient penalty then cannot
    lock the critic's initial random orientation in place (a barrier of height lam
    separates a 1-Lipschitz critic from its negation), and the first steps follow the
    sign of E_p phi - E_q phi."""
    critic = nn.Sequential(nn.Linear(m, hidden), nn.Softplus(), nn.Linear(hidden, hidden),
                           nn.Softplus(), nn.Linear(hidden, 1))
    nn.init.zeros_(critic[-1].weight)
    nn.init.zeros_(critic[-1].bias)
    return critic.to(dtype=dtype, device=device)


def critic_loss(critic, f_p, f_q, lam: float = 10.0, generator=None):
    """-(E_p phi - E_q phi) + lam * E (||grad phi(f_hat)|| - 1)^2 with f_hat a random
    interpolate of p and q samples (WGAN-GP). Returns (loss, W1 estimate)."""
    w = critic(f_p).mean() - critic(f_q).mean()
    t = torch.rand(f_p.shape[0], 1, dtype=f_p.dtype, device=f_p.device, generator=generator)
    f_hat = (t * f_p + (1 - t) * f_q).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(f_hat).sum(), f_hat, create_graph=True)
    penalty = (grad.norm(dim=-1) - 1).pow(2).mean()
    return -w + lam * penalty, w.detach()


def estimate_w1(sample_p, sample_q, dim: int, steps: int = 500, n: int = 256,
                lr: float = 0.02, lam: float = 10.0, eval_n: int = 4096, seed: int = 0,
                dtype=None, device=None, hidden: int = 200, eval_p=None,
                eval_q=None) -> float:
    """W1(p, q) by training a fresh critic (Adagrad) for ``steps`` steps on fresh samples,
    then evaluating E_p phi - E_q phi on ``eval_n`` new samples. ``sample_p(n)`` and
    ``sample_q(n)`` return [n, dim] tensors; ``eval_p``/``eval_q`` (default: the same
    samplers) draw the evaluation samples, e.g. from a held-out bag when ``sample_p``
    resamples a fixed bag of draws.

    The penalised critic is only softly 1-Lipschitz: for two 1-D Gaussians a distance d
    apart the optimum of d*s - lam*(s - 1)^2 is the slope s = 1 + d/(2 lam), so the
    estimate is inflated by about d/(2 lam) relative; a larger ``lam`` shrinks the bias."""
    g = torch.Generator(device=device or "cpu").manual_seed(seed)
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    critic = make_critic(dim, hidden, dtype=dtype, device=device)
    torch.random.set_rng_state(torch_state)
    opt = torch.optim.Adagrad(critic.parameters(), lr=lr)
    for _ in range(steps):
        loss, _ = critic_loss(critic, sample_p(n).detach(), sample_q(n).detach(), lam, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(critic((eval_p or sample_p)(eval_n)).mean()
                     - critic((eval_q or sample_q)(eval_n)).mean())


# the fit needs gradients even when the model runs under no_grad (Predictive, sample_prior)
@torch.enable_grad()
def match_gp(sizes: list[int] | ConvArch, act, kernel, inputs: torch.Tensor,
             family: str = "gaussian",
             steps: int = 200, samples: int = 128, points: int = 100, critic_steps: int = 20,
             critic_init_steps: int = 200, lr: float = 0.05, measure: str = "data",
             seed: int = 0, critic_lr: float = 0.02, lam: float = 10.0,
             warm_start: bool = True, init_scale: float = 1.0,
             share_samples: bool = False, min_shape: float = 0.0) -> dict:
    """Fit psi: min_psi E_X W1(p_gp(f(X)), p_nn(f(X); psi)) (METHODS.md §1).

    Each outer step draws a measurement set X, trains the critic (warm-started unless
    ``warm_start`` is False, when it is re-initialised as in the reference), then takes one
    RMSprop step on psi through reparameterised network samples; psi starts at
    ``init_scale`` (:func:`_init_psi`) and the critic's Adagrad rate is ``critic_lr``.
    With ``share_samples`` the critic's steps at an outer step train on that step's
    network draws (detached; GP draws stay fresh per critic step) instead of drawing new
    ones per critic step: one network forward per outer step instead of
    ``critic_steps + 1``, which is most of the cost at the 1-D toy's 512 samples x 200
    points (the reference likewise trains its critic on one bag of draws per outer step).
    ``min_shape`` floors the hierarchical family's IG shape, alpha = min_shape +
    softplus(raw) (the reference's family is min_shape = 0; see
    docs/constructs/network_priors.md on GPiH for why 1 is the useful floor).
    Returns
    ``{"psi": {...}, "w1": [W1 estimate per outer step], "psi_trace": {name: [steps + 1,
    layers]}}`` (psi before the first step and after every step, so that W1 along the way
    can be measured afterwards by a fresh critic), and ``"skipped"``: optimiser steps left
    out because a gradient was not finite (:func:`step_if_finite`).

    For a CNN (``sizes`` a :class:`ConvArch`) the inputs are images [N, C, H, W]: the
    measurement set and the kernel see them flattened to C*H*W features, and the function
    matched is the network's first output unit (the units are exchangeable a priori).
    """
    arch = sizes if isinstance(sizes, ConvArch) else None
    x = _as_matrix(inputs).detach()
    if arch is not None:
        x = x.reshape(x.shape[0], -1)

    def net_at(xm, weights):
        return forward(xm if arch is None else xm.reshape(-1, *arch.in_shape), weights, act,
                       arch)[..., 0]
    dtype, device = x.dtype, x.device
    g = torch.Generator(device=device).manual_seed(seed)
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # the critic's initialisation
    try:
        psi = {k: v.requires_grad_(True) for k, v in
               _init_psi(len(_layer_shapes(sizes)), family, dtype, device, init_scale,
                         min_shape).items()}
        opt_psi = torch.optim.RMSprop(list(psi.values()), lr=lr)
        critic, opt_c = None, None
        history, path = [], [{k: v.detach().clone() for k, v in psi.items()}]
        skipped = 0
        for _ in range(steps):
            xm = measurement_set(x, points, measure, g)
            draw_gp = gp_sampler(kernel, xm)
            if critic is None or not warm_start:
                critic = make_critic(xm.shape[0], dtype=dtype, device=device)
                opt_c = torch.optim.Adagrad(critic.parameters(), lr=critic_lr)
                n_c = critic_init_steps
            else:
                n_c = critic_steps
            if share_samples:
                f_nn = net_at(xm, prior_weights(psi, family, sizes, samples, g, min_shape))
            for _ in range(n_c):
                if share_samples:
                    f_c = f_nn.detach()
                else:
                    with torch.no_grad():
                        f_c = net_at(xm, prior_weights(psi, family, sizes, samples, g, min_shape))
                loss, _ = critic_loss(critic, f_c, draw_gp(samples, g), lam, g)
                opt_c.zero_grad()
                loss.backward()
                skipped += not step_if_finite(opt_c)
            if not share_samples:
                f_nn = net_at(xm, prior_weights(psi, family, sizes, samples, g, min_shape))
            w = critic(f_nn).mean() - critic(draw_gp(samples, g)).mean()
            opt_psi.zero_grad()
            w.backward()
            ok = step_if_finite(opt_psi)
            skipped += not ok
            # a skipped step's estimate is not a W1 value: NaN keeps the trace aligned
            history.append(float(w.detach()) if ok else float("nan"))
            path.append({k: v.detach().clone() for k, v in psi.items()})
    finally:
        torch.random.set_rng_state(torch_state)
    return {"psi": {k: v.detach() for k, v in psi.items()}, "w1": history,
            "psi_trace": {k: torch.stack([p[k] for p in path]) for k in psi},
            "skipped": skipped}


def step_if_finite(opt: torch.optim.Optimizer) -> bool:
    """``opt.step()`` unless a gradient is NaN/inf; then the step is skipped (gradients
    zeroed, parameters and optimiser state untouched) and False returned.

    GPiH draws v = 1/Gamma(alpha, beta) per function sample: with a small alpha a Gamma
    draw can underflow to 0, v and the network's output become inf, and one such sample
    would otherwise turn the critic's or psi's parameters (and Adagrad/RMSprop state) NaN
    for good."""
    params = [p for group in opt.param_groups for p in group["params"] if p.grad is not None]
    if all(bool(torch.isfinite(p.grad).all()) for p in params):
        opt.step()
        return True
    opt.zero_grad()
    return False


# ---- caching ------------------------------------------------------------------------------
def cache_dir() -> Path:
    root = os.environ.get("BDL_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache",
                                                           "bdl")
    return Path(root) / "network_priors"


def _describe(v):
    """A JSON-able description of a kernel (its class and parameter values)."""
    if isinstance(v, torch.Tensor):
        return v.detach().double().cpu().tolist()
    if isinstance(v, (int, float, str, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_describe(a) for a in v]
    return {"class": type(v).__name__, **{k: _describe(a) for k, a in sorted(vars(v).items())}}


def settings_key(sizes, act_name, kernel, inputs, **settings) -> str:
    x = _as_matrix(inputs).detach().double().cpu().contiguous()
    shape = sizes.describe() if isinstance(sizes, ConvArch) else list(sizes)
    desc = {"version": _CACHE_VERSION, "sizes": shape, "act": act_name,
            "kernel": _describe(kernel), "inputs": hashlib.sha256(x.numpy().tobytes()).hexdigest(),
            "inputs_shape": list(x.shape), "dtype": str(inputs.dtype),
            "device": inputs.device.type, **settings}
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:32]


_MEMO: dict[str, dict] = {}
FIT_COUNT = {"n": 0}  # how many times match_gp actually ran (the cache is tested by it)
# settings_key per inputs tensor object (unchanged since: same torch _version): the model
# calls gp_prior at every SGHMC step, and hashing the inputs each time cost ~1 ms per step
# on a few thousand rows (and cannot run inside torch.func transforms, which wrap tensors)
_KEY_MEMO: dict[int, tuple] = {}


def _cached_key(sizes, act_name, kernel, inputs, settings) -> str:
    rest = json.dumps({"sizes": sizes.describe() if isinstance(sizes, ConvArch)
                       else list(sizes), "act": act_name, "kernel": _describe(kernel),
                       **settings}, sort_keys=True)
    hit = _KEY_MEMO.get(id(inputs))
    if hit is not None and hit[0]() is inputs and hit[1] == inputs._version and hit[2] == rest:
        return hit[3]
    key = settings_key(sizes, act_name, kernel, inputs, **settings)
    for k in [k for k, v in _KEY_MEMO.items() if v[0]() is None]:  # freed tensors
        del _KEY_MEMO[k]
    _KEY_MEMO[id(inputs)] = (weakref.ref(inputs), inputs._version, rest, key)
    return key


def fitted_psi(sizes, act_name, kernel, inputs, *, cache: bool = True, **settings) -> dict:
    """psi for these settings: from memory, else from the disk cache, else fitted."""
    inputs = _t(inputs, "inputs") if not isinstance(inputs, torch.Tensor) else inputs
    key = _cached_key(sizes, act_name, kernel, inputs, settings)
    if key in _MEMO:
        return _MEMO[key]
    path = cache_dir() / f"{key}.pt"
    result = None
    if cache and path.exists():
        try:
            result = torch.load(path, map_location=inputs.device)
        except Exception:  # a corrupt cache file is refitted
            result = None
    if result is None:
        t0 = time.perf_counter()
        result = match_gp(sizes, _act_by_name(act_name), kernel, inputs, **settings)
        result["fit_s"] = time.perf_counter() - t0
        FIT_COUNT["n"] += 1
        if cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            torch.save(result, tmp)
            os.replace(tmp, path)
    _MEMO[key] = result
    return result


def _act_by_name(name: str):
    for cls, fn in ACT_FUNCTIONS.items():
        if cls.__name__.lower() == name:
            return fn
    raise ValueError(f"unknown activation {name!r}")
