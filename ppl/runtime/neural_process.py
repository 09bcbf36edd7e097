"""Neural processes (CNP, NP, ANP, MPNP) and the 1-D GP task sources (METHODS.md section 3).

Every model maps a context set (xc, yc) and target inputs xt to Gaussian predictives

    p(y | x, theta) = N(y; mu_theta(x), sigma_theta(x)^2),  sigma = 0.1 + 0.9 softplus(.)

from a decoder MLP of depth 3 (hidden 128 by default) on [x, representation]. They differ
in where the representation and its uncertainty come from:

* CNP: theta = post(mean_i pre(x_i, y_i)) (mean-pooled, deterministic).
* NP: CNP path plus a latent z ~ N(m, s^2) from a second mean-pooled encoder
  (s = 0.1 + 0.9 sigmoid); trained with the K-sample importance-weighted bound
  -log (1/K) sum_k exp[sum_i log p(y_i | z_k) + log p(z_k | ctx) - log q(z_k | all)],
  q the same encoder applied to all points.
* ANP: NP with the deterministic path replaced by multi-head cross-attention from the
  target inputs to the context representations.
* AMPNP: MPNP with ANP's cross-attention path (to the real context) beside theta in the
  decoder input ([x, r*(x), theta]); same generator and three-term loss.
  AMPNPPseudoAttention: the attention also reads the pseudo points, the same set as
  theta (real context, context u pseudo set k, or pseudo set k alone).
* MPNP: CNP whose uncertainty comes from M pseudo-context representations R' generated
  in one shot by an induced set-attention block on the encoded context and noise
  eps ~ N(0, I); theta_k = post(mean(R_c u R'_k)). Training loss per task (n = all points,
  context u target):
      n L = -sum_i log p(y_i | theta_c)
            - log (1/K) sum_k exp sum_i log p(y_i | theta_k)
            - log (1/K) sum_k exp sum_i log p(y_i | theta'_k),
  theta_c from the real context alone and theta'_k from pseudo set k alone
  (docs/constructs/neural_process.md derives it). The generator's base (``generator=``:
  mean, resample, predictive, or mixed, alternating mean- and predictive-base sets in
  one mixture) is PseudoContextGenerator.mode.

All predictives with latent draws or pseudo sets are mixtures over them. Inputs may be
one task ([N, d]) or a batch of tasks ([B, N, d]); tensors follow the module's device and
the inputs' dtype is cast to the module's.
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

# one list of the generator's bases for the checker (generator=...) and the runtime
from ..constructs.neural_process import CALL_INPUTS, GENERATOR_MODES
from .errors import ArgumentError

# ---- building blocks ----------------------------------------------------------------


def mlp(d_in: int, hidden: int, d_out: int, depth: int) -> nn.Sequential:
    """``depth`` linear layers with ReLU between them."""
    sizes = [d_in] + [hidden] * (depth - 1) + [d_out]
    layers: list[nn.Module] = []
    for i in range(depth):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < depth - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def sigma_floor(raw: torch.Tensor) -> torch.Tensor:
    """sigma = 0.1 + 0.9 softplus(raw): the decoder's predictive scale (METHODS.md 3)."""
    return 0.1 + 0.9 * F.softplus(raw)


def logmeanexp(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    return torch.logsumexp(x, dim) - math.log(x.shape[dim])


class MAB(nn.Module):
    """Multihead attention block (Set Transformer): H = LN(Q + MHA(Q, K, K)),
    out = LN(H + rFF(H)). Row-wise in Q, permutation invariant in K."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        _heads_divide(dim, heads)
        self.att = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        h = self.ln1(q + self.att(q, k, k, need_weights=False)[0])
        return self.ln2(h + self.ff(h))


class PoolingEncoder(nn.Module):
    """r = post(mean_i pre([x_i, y_i])): permutation invariant in the context points."""

    def __init__(self, x_dim: int, y_dim: int, hidden: int, out: int):
        super().__init__()
        self.pre = mlp(x_dim + y_dim, hidden, hidden, 3)
        self.post = mlp(hidden, hidden, out, 2)

    def embed(self, x, y):
        return self.pre(torch.cat([x, y], -1))

    def pool(self, r):
        return self.post(r.mean(-2))

    def forward(self, x, y):
        return self.pool(self.embed(x, y))


class CrossAttnEncoder(nn.Module):
    """r*(x_t) = LN(h + rFF(h)), h = LN(q + MHA(q(x_t), k(x_c), v([x_c, y_c]))): ANP's
    deterministic path; permutation invariant in the context points."""

    def __init__(self, x_dim: int, y_dim: int, hidden: int, heads: int):
        super().__init__()
        self.q = mlp(x_dim, hidden, hidden, 2)
        self.k = mlp(x_dim, hidden, hidden, 2)
        self.v = mlp(x_dim + y_dim, hidden, hidden, 3)
        _heads_divide(hidden, heads)
        self.att = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.ln1, self.ln2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.ff = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))

    def forward(self, xc, yc, xt):
        return self.block(self.q(xt), self.k(xc), self.v(torch.cat([xc, yc], -1)))

    def block(self, q, k, v):
        """LN(h + rFF(h)), h = LN(q + MHA(q, k, v)) for queries q [..., N, h] and keys and
        values k, v [..., C, h] with the same leading dimensions -> [..., N, h]."""
        lead = q.shape[:-2]
        q, k, v = (t.reshape((-1,) + t.shape[-2:]) for t in (q, k, v))
        h = self.ln1(q + self.att(q, k, v, need_weights=False)[0])
        h = self.ln2(h + self.ff(h))
        return h.reshape(lead + h.shape[-2:])


class Decoder(nn.Module):
    """[x, r] -> (mu, sigma), depth 3, sigma = 0.1 + 0.9 softplus."""

    def __init__(self, x_dim: int, r_dim: int, y_dim: int, hidden: int):
        super().__init__()
        self.net = mlp(x_dim + r_dim, hidden, 2 * y_dim, 3)

    def forward(self, x, r):
        out = self.net(torch.cat([x, r], -1))
        mu, raw = out.chunk(2, -1)
        return mu, sigma_floor(raw)


def _count(value, name: str, low: int) -> int:
    """An integer argument (a number, or a one-element tensor from a list literal) of at
    least ``low``; anything else is an :class:`ArgumentError` at that argument."""
    v = value
    if isinstance(v, torch.Tensor):
        if v.numel() != 1:
            width = " (the width of every layer)" if name == "hidden" else ""
            raise ArgumentError(f"{name} must be one integer{width}, got {v.numel()} values",
                                argument=name)
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or v != int(v) or v < low:
        raise ArgumentError(f"{name} must be an integer of at least {low}, got {v!r}",
                            argument=name)
    return int(v)


def _heads_divide(hidden: int, heads: int) -> None:
    """Multi-head attention splits the width into ``heads`` equal parts."""
    if hidden % heads:
        raise ArgumentError(f"heads={heads} must divide the attention width hidden={hidden}",
                            argument="heads")


def _mark(d):
    """Tag a predictive so the np_train runner finds the sites it feeds."""
    d._bdl_np = True
    return d


def _loo_pooled(enc: PoolingEncoder, dec: Decoder, xc, yc):
    """Leave-one-out amortised predictive of a mean-pooled family: at x_i, the decoder on
    theta_-i = post(mean_{j != i} pre(x_j, y_j)) = post((sum_j r_j - r_i) / (C - 1)),
    every i in one pass -> (mu, sigma) [B, C, y]."""
    r = enc.embed(xc, yc)                                               # [B, C, h]
    loo = (r.sum(-2, keepdim=True) - r) / (r.shape[-2] - 1)
    return dec(xc, enc.post(loo))


def _gauss_ll(mu, sigma, y):
    """sum over y_dim of log N(y; mu, sigma^2), shape [..., N]."""
    return dist.Normal(mu, sigma).log_prob(y).sum(-1)


# ---- the models ---------------------------------------------------------------------


def check_generator(value: str) -> str:
    """``value`` if it names a pseudo-context generator (GENERATOR_MODES), else ValueError."""
    if value not in GENERATOR_MODES:
        raise ValueError(f"unknown pseudo-context generator {value!r} (expected one of "
                         f"{', '.join(GENERATOR_MODES)})")
    return value


def _mode_flag(name: str) -> property:
    """A boolean view of the generator's mode: True when it is ``name``; setting it True
    selects ``name``, False returns ``name`` to the mean base."""

    def get(self) -> bool:
        return self.mode == name

    def set_(self, on: bool) -> None:
        if on:
            self.mode = name
        elif self.mode == name:
            self.mode = "mean"

    return property(get, set_, doc=f"mode == {name!r}")


class NeuralProcess(nn.Module):
    """Common interface: ``predict`` (mu, sigma of shape [S, B, N, y]), ``loss`` (the
    per-point training objective of one batch) and ``forward`` (a Pyro distribution).
    ``generator`` is the pseudo-context generator's base (one of GENERATOR_MODES) of the
    martingale families; the others check it and ignore it, so that every family takes
    the same arguments."""

    stochastic = True

    def __init__(self, x_dim, y_dim, hidden=128, pseudo=0, samples=50, heads=8,
                 generator="mean"):
        super().__init__()
        check_generator(generator)
        self.x_dim, self.y_dim = _count(x_dim, "x_dim", 1), _count(y_dim, "y_dim", 1)
        self.hidden = _count(hidden, "hidden", 1)
        self.pseudo, self.samples = _count(pseudo, "pseudo", 0), _count(samples, "samples", 1)
        self.heads = _count(heads, "heads", 1)

    # -- helpers
    def _dtype(self):
        return next(self.parameters()).dtype

    def _cast(self, *ts):
        dt = self._dtype()
        return [t.to(dt) for t in ts]

    def predict(self, xc, yc, xt, num_samples=None):
        raise NotImplementedError

    def loss(self, xc, yc, x, y, num_samples=4):
        raise NotImplementedError

    # -- the task-level width ladder (an evaluation-time option, off by default)
    _width_ladder: tuple[float, ...] | None = None

    @property
    def width_ladder(self) -> tuple[float, ...] | None:
        """Widths lambda_1..lambda_J of the ladder, or None (off): the predictive becomes
        sum_j w_j (1/S) sum_s N(mu_s, (lambda_j sigma_s)^2), w_j from the context's
        leave-one-out evidence (:meth:`width_log_weights`). Not saved with the weights.
        Setting it checks that there is at least one width and that every width is a
        finite number > 0 (a width of 0 or below is no Gaussian: a ValueError here, not
        a NaN in the evaluation)."""
        return self._width_ladder

    @width_ladder.setter
    def width_ladder(self, widths) -> None:
        if widths is None:
            self._width_ladder = None
            return
        ws = tuple(float(w) for w in widths)
        if not ws or not all(math.isfinite(w) and w > 0 for w in ws):
            raise ValueError("width_ladder: the widths lambda must be finite numbers > 0 "
                             f"(at least one), got {tuple(widths)!r}")
        self._width_ladder = ws

    @classmethod
    def has_width_ladder(cls) -> bool:
        """Whether the family has the closed-form leave-one-out amortised predictive the
        width ladder scores the context with (the mean-pooled CNP and MPNP do; the latent
        NP and the attentive families do not), so a caller can refuse the option before
        training."""
        return cls._loo_amortised is not NeuralProcess._loo_amortised

    def _loo_amortised(self, xc, yc):
        """The amortised predictive (mu, sigma) [B, C, y] at each context input from the
        other C - 1 context points; only the mean-pooled families have it in closed form."""
        raise ValueError(f"width_ladder: {type(self).__name__} has no mean-pooled amortised "
                         "predictive to score the context with (use cnp or martingale_np)")

    def width_log_weights(self, xc: torch.Tensor, yc: torch.Tensor) -> torch.Tensor:
        """log w_j [J, B] of the width ladder: a task-level scale lambda of the predictive,
        uniform prior over the ladder, posterior from the context's leave-one-out
        (prequential) predictive score,

            log w_j = log softmax_j sum_i log N(y_i; mu_-i(x_i), (lambda_j sigma_-i(x_i))^2),

        (mu_-i, sigma_-i) the amortised predictive from the context without point i
        (:meth:`_loo_amortised`). Leave-one-out scores are what the marginal likelihood
        is built from (Fong & Holmes 2020), and weighting a predictive's width by them is
        the SafeBayes remedy for misspecification (Gruenwald: a learning rate eta <= 1
        chosen on the sequential log-loss; for a Gaussian predictive tempering by eta
        widens it by eta^-1/2). A context the amortised predictive explains gives weight
        to lambda = 1; one it cannot (a periodic task for a model trained on RBF tasks)
        moves the weight to wider components. With fewer than two context points there is
        nothing to leave out and the weights are uniform. Beyond METHODS.md section 3
        (whose predictive is the plain mixture): docs/constructs/neural_process.md,
        "Width ladder" and "Periodic mismatch"."""
        xc, yc = self._cast(xc, yc)
        lam = torch.tensor(self.width_ladder, dtype=xc.dtype, device=xc.device)
        J = lam.shape[0]
        if xc.shape[-2] < 2:
            return torch.full((J,) + xc.shape[:-2], -math.log(J), dtype=xc.dtype,
                              device=xc.device)
        mu, sigma = self._loo_amortised(xc, yc)
        scale = lam.reshape((J,) + (1,) * sigma.dim())
        ll = _gauss_ll(mu, sigma * scale, yc).sum(-1)                     # [J, B]
        return torch.log_softmax(ll, 0)

    def predict_mixture(self, xc: torch.Tensor, yc: torch.Tensor, xt: torch.Tensor,
                        num_samples: int | None = None):
        """(mu, sigma, log_w): the predictive's components [S, B, N, y] and their log
        weights [S, B], or None for equal weights (every family without the width
        ladder). With the ladder, S = J * draws: every draw of :meth:`predict` at each
        width lambda_j sigma, weighted w_j / draws (:meth:`width_log_weights`)."""
        mu, sigma = self.predict(xc, yc, xt, num_samples)
        if not self.width_ladder:
            return mu, sigma, None
        lw = self.width_log_weights(xc, yc)                                # [J, B]
        J, S = lw.shape[0], mu.shape[0]
        lam = torch.tensor(self.width_ladder, dtype=sigma.dtype, device=sigma.device)
        mu = mu.unsqueeze(0).expand((J,) + mu.shape).reshape((J * S,) + mu.shape[1:])
        sigma = (sigma.unsqueeze(0) * lam.reshape((J,) + (1,) * sigma.dim())
                 ).reshape((J * S,) + sigma.shape[1:])
        log_w = (lw.unsqueeze(1) - math.log(S)).expand((J, S) + lw.shape[1:])
        return mu, sigma, log_w.reshape((J * S,) + lw.shape[1:])

    def check_inputs(self, xc, yc, xt) -> None:
        """An :class:`ArgumentError` at the first input that is not [points, d] or
        [tasks, points, d] with d its x_dim / y_dim, or whose tasks or points do not line
        up with the context's (a torch shape error deep in an encoder says neither)."""
        want = {"xc": self.x_dim, "yc": self.y_dim, "xt": self.x_dim}
        dims = {"xc": "x_dim", "yc": "y_dim", "xt": "x_dim"}
        for name, t in zip(CALL_INPUTS, (xc, yc, xt), strict=True):
            d = want[name]
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else None
            if shape is None or len(shape) not in (2, 3) or shape[-1] != d:
                got = f"shape {list(shape)}" if shape is not None else type(t).__name__
                raise ArgumentError(f"input '{name}' of the neural process must be "
                                    f"[points, {d}] or [tasks, points, {d}] ({dims[name]}="
                                    f"{d}), got {got}", argument=name)
        if yc.shape[:-1] != xc.shape[:-1]:
            raise ArgumentError(f"inputs 'xc' and 'yc' of the neural process must have the "
                                f"same tasks and points, got shapes {list(xc.shape)} and "
                                f"{list(yc.shape)}", argument="yc")
        if xt.shape[:-2] != xc.shape[:-2] or xt.dim() != xc.dim():
            raise ArgumentError(f"input 'xt' of the neural process must have the context's "
                                f"tasks, got shapes {list(xc.shape)} (xc) and "
                                f"{list(xt.shape)} (xt)", argument="xt")

    def forward(self, xc, yc, xt, num_samples=None):
        """The predictive of the targets: N(mu, sigma^2) over [N, y] for a CNP, else the
        equal-weight mixture over the S draws of Independent normals (joint over the
        targets of one draw)."""
        self.check_inputs(xc, yc, xt)
        single = xc.dim() == 2
        if single:
            xc, yc, xt = xc.unsqueeze(0), yc.unsqueeze(0), xt.unsqueeze(0)
        mu, sigma, log_w = self.predict_mixture(xc, yc, xt, num_samples)
        if single:
            mu, sigma = mu[:, 0], sigma[:, 0]
            log_w = None if log_w is None else log_w[:, 0]
        if mu.shape[0] == 1:
            return _mark(dist.Normal(mu[0], sigma[0]).to_event(2))
        # mixture over the leading draw dimension, moved last in the batch: [(B), S]
        comp = dist.Normal(mu.movedim(0, -3), sigma.movedim(0, -3)).to_event(2)
        logits = (torch.zeros(comp.batch_shape, dtype=mu.dtype, device=mu.device)
                  if log_w is None else log_w.movedim(0, -1))
        return _mark(dist.MixtureSameFamily(dist.Categorical(logits=logits), comp))

    @torch.no_grad()
    def pointwise_ll(self, xc, yc, x, y, num_samples=None):
        """Per-point log-likelihood log (1/S) sum_s N(y_i; mu_s(x_i), sigma_s(x_i)^2),
        shape [B, N] (the benchmark's log-mean-exp over S draws)."""
        xc, yc, x, y = self._cast(xc, yc, x, y)
        mu, sigma, log_w = self.predict_mixture(xc, yc, x, num_samples)
        if log_w is None:
            return logmeanexp(_gauss_ll(mu, sigma, y), 0)
        return torch.logsumexp(log_w.unsqueeze(-1) + _gauss_ll(mu, sigma, y), 0)


class CNP(NeuralProcess):
    stochastic = False

    def __init__(self, x_dim, y_dim, hidden=128, pseudo=0, samples=50, heads=8,
                 generator="mean"):
        super().__init__(x_dim, y_dim, hidden, pseudo, samples, heads, generator)
        self.enc = PoolingEncoder(self.x_dim, self.y_dim, self.hidden, self.hidden)
        self.dec = Decoder(self.x_dim, self.hidden, self.y_dim, self.hidden)

    def predict(self, xc, yc, xt, num_samples=None):
        xc, yc, xt = self._cast(xc, yc, xt)
        r = self.enc(xc, yc)
        r = r.unsqueeze(-2).expand(xt.shape[:-1] + r.shape[-1:])
        mu, sigma = self.dec(xt, r)
        return mu.unsqueeze(0), sigma.unsqueeze(0)

    def _loo_amortised(self, xc, yc):
        return _loo_pooled(self.enc, self.dec, xc, yc)

    def loss(self, xc, yc, x, y, num_samples=4):
        xc, yc, x, y = self._cast(xc, yc, x, y)
        mu, sigma = self.predict(xc, yc, x)
        return -_gauss_ll(mu[0], sigma[0], y).mean()


class LatentEncoder(nn.Module):
    """q(z | set) = N(m, s^2), s = 0.1 + 0.9 sigmoid(.), from a mean-pooled encoder."""

    def __init__(self, x_dim, y_dim, hidden):
        super().__init__()
        self.enc = PoolingEncoder(x_dim, y_dim, hidden, 2 * hidden)

    def forward(self, x, y):
        m, raw = self.enc(x, y).chunk(2, -1)
        return dist.Normal(m, 0.1 + 0.9 * torch.sigmoid(raw))


class NP(NeuralProcess):
    """Latent NP: deterministic path (``_det``) plus z in R^hidden."""

    def __init__(self, x_dim, y_dim, hidden=128, pseudo=0, samples=50, heads=8,
                 generator="mean"):
        super().__init__(x_dim, y_dim, hidden, pseudo, samples, heads, generator)
        self._build_det()
        self.lat = LatentEncoder(self.x_dim, self.y_dim, self.hidden)
        self.dec = Decoder(self.x_dim, 2 * self.hidden, self.y_dim, self.hidden)

    def _build_det(self):
        self.enc = PoolingEncoder(self.x_dim, self.y_dim, self.hidden, self.hidden)

    def _det(self, xc, yc, xt):
        r = self.enc(xc, yc)
        return r.unsqueeze(-2).expand(xt.shape[:-1] + r.shape[-1:])

    def _decode(self, xc, yc, xt, z):
        """z: [S, B, h] -> mu, sigma [S, B, N, y]."""
        S = z.shape[0]
        r = self._det(xc, yc, xt).unsqueeze(0).expand((S,) + xt.shape[:-1] + (self.hidden,))
        zz = z.unsqueeze(-2).expand(r.shape)
        x = xt.unsqueeze(0).expand((S,) + xt.shape)
        return self.dec(x, torch.cat([r, zz], -1))

    def predict(self, xc, yc, xt, num_samples=None):
        xc, yc, xt = self._cast(xc, yc, xt)
        S = num_samples or self.samples
        z = self.lat(xc, yc).sample((S,))
        return self._decode(xc, yc, xt, z)

    def loss(self, xc, yc, x, y, num_samples=4):
        """-(1/n) log (1/K) sum_k exp[sum_i log p(y_i | z_k) + log p(z_k|c) - log q(z_k|all)],
        z_k ~ q(z | all points) (importance-weighted bound; x, y are context u target)."""
        xc, yc, x, y = self._cast(xc, yc, x, y)
        pz, qz = self.lat(xc, yc), self.lat(x, y)
        z = qz.rsample((num_samples,))
        mu, sigma = self._decode(xc, yc, x, z)
        log_w = _gauss_ll(mu, sigma, y).sum(-1) + pz.log_prob(z).sum(-1) \
            - qz.log_prob(z).sum(-1)
        return -(logmeanexp(log_w, 0) / x.shape[-2]).mean()


class ANP(NP):
    """Attentive NP: cross-attention deterministic path + mean-pooled latent path."""

    def _build_det(self):
        self.enc = CrossAttnEncoder(self.x_dim, self.y_dim, self.hidden, self.heads)

    def _det(self, xc, yc, xt):
        return self.enc(xc, yc, xt)


class PseudoContextGenerator(nn.Module):
    """R'_j = B_j + Out(P_j), P = rows M of ISAB([R_c + e_c ; W eps + e_p]),
    ISAB(X) = MAB(X, MAB(I, X)), with the base B_j the context's mean representation
    mean_i R_c,i (the default) or, with ``resample = True``, a soft resampling of the
    context, B_j = sum_i softmax_i(q(P_j) . k(R_c,i) / sqrt(h)) R_c,i.

    The inducing points I attend to the encoded context and the noise, so the output is
    invariant to permutations of the context and equivariant to permutations of eps
    (exchangeable pseudo-context: eps_{1:M} are iid). ``Out`` starts at zero, so an
    untrained generator imputes the context's mean (theta_k = theta_c), or points inside
    the context's convex hull, and theta_k carries the task's information from the first
    step: a free generator's LayerNorm-scaled outputs are ~4x larger than the encoded
    context and their spread across draws ~7x the spread of mean R_c across tasks, so
    the marginal term trained a decoder that ignores x. The resampling base ties the
    spread of the pseudo sets to the spread of the context's own representations, as a
    bootstrap does; measured, it fits the training kernel faster but is no better under
    the periodic mismatch (docs/constructs/neural_process.md, "Periodic mismatch"), so it
    is an option. Its layers are built in both modes so that the two start from the same
    weights everywhere else (a paired ablation). With ``predictive = True`` the base is
    given by the caller: MPNP's imputations from its amortised predictive
    (:meth:`MPNP._imputed`; measured clearly higher under the periodic mismatch but lower
    in distribution, so also an option). With ``mixed = True`` (``mode = "mixed"``) the
    K sets alternate the two: even k the mean base, odd k the predictive base
    (:meth:`predictive_sets`), one mixture and one decoder for both kinds."""

    def __init__(self, hidden, heads, inducing=16):
        super().__init__()
        # the base of the pseudo points (:attr:`mode`): "mean"; "resample" (soft picks of
        # the context's representations); "predictive" (an imputed observation drawn from
        # the amortised predictive, MPNP._sets; no layers of its own); "mixed" (the two
        # kinds of pseudo set alternate, mean base at even k and predictive base at odd
        # k, in one mixture, :meth:`predictive_sets`)
        self._mode = "mean"
        # mixed mode's loss: False, one bound over all K sets (the kinds compete for the
        # gradient); True, each kind's own bound, weighted by its share (loss_strata)
        self.per_kind_bound = False
        # mixed mode: add the learned offset kind_tag (zero at the start) to the
        # predictive-base sets' points, so that the decoder can tell the kinds apart
        self.tag_kinds = False
        self.inducing = nn.Parameter(torch.randn(inducing, hidden) / math.sqrt(hidden))
        self.noise_in = nn.Linear(hidden, hidden)
        self.tag = nn.Parameter(torch.zeros(2, hidden))
        self.kind_tag = nn.Parameter(torch.zeros(hidden))
        self.mab1, self.mab2 = MAB(hidden, heads), MAB(hidden, heads)
        self.pick_q = nn.Linear(hidden, hidden, bias=False)
        self.pick_k = nn.Sequential(nn.LayerNorm(hidden, elementwise_affine=False),
                                    nn.Linear(hidden, hidden, bias=False))
        # attention logits of sd ~1.5 at the start: soft picks, neither uniform (the mean)
        # nor one-hot
        nn.init.normal_(self.pick_q.weight, std=2.5 / math.sqrt(hidden))
        self.out = nn.Linear(hidden, hidden)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    @property
    def mode(self) -> str:
        """The base of the pseudo points: ``mean``, ``resample``, ``predictive`` or
        ``mixed`` (one of GENERATOR_MODES)."""
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        self._mode = check_generator(value)

    resample = _mode_flag("resample")
    predictive = _mode_flag("predictive")
    mixed = _mode_flag("mixed")

    def predictive_sets(self, num_sets: int) -> list[bool]:
        """Which of ``num_sets`` pseudo sets take the predictive base: all of them in the
        predictive mode, the odd-numbered ones in the mixed mode (so ceil(K/2) mean-base
        and floor(K/2) predictive-base sets, fraction 1/2 each for even K), none
        otherwise. Sets are exchangeable within a kind, so the mixture over sets is
        invariant to which indices carry which kind."""
        if self.mixed:
            return [k % 2 == 1 for k in range(num_sets)]
        return [self.predictive] * num_sets

    def loss_strata(self, num_sets: int) -> list[bool] | None:
        """The kinds over which :func:`mpnp_loss` bounds separately: the mixed mode's
        :meth:`predictive_sets` with ``per_kind_bound``, else None (one bound)."""
        return self.predictive_sets(num_sets) if self.mixed and self.per_kind_bound else None

    def forward(self, rc: torch.Tensor, eps: torch.Tensor,
                base: torch.Tensor | None = None) -> torch.Tensor:
        """rc: [..., C, h], eps: [..., M, h] (same leading dims) -> R' [..., M, h].
        ``base`` [..., M, h], when given, replaces the mean/resampling base (MPNP's
        predictive imputation, :meth:`MPNP._sets`)."""
        lead, M = eps.shape[:-2], eps.shape[-2]
        x = torch.cat([rc + self.tag[0], self.noise_in(eps) + self.tag[1]], -2)
        x = x.reshape((-1,) + x.shape[-2:])
        ind = self.inducing.unsqueeze(0).expand(x.shape[0], -1, -1)
        h = self.mab1(ind, x)
        pseudo = self.mab2(x[:, -M:], h)                                  # [L, M, h]
        rcf = rc.reshape((-1,) + rc.shape[-2:])                            # [L, C, h]
        if base is not None:
            base = base.reshape((-1,) + base.shape[-2:])
        elif self.resample:
            logits = self.pick_q(pseudo) @ self.pick_k(rcf).transpose(-1, -2)
            base = torch.softmax(logits / math.sqrt(rc.shape[-1]), -1) @ rcf
        else:
            base = rcf.mean(-2, keepdim=True)
        return (base + self.out(pseudo)).reshape(lead + (M, rc.shape[-1]))


class MPNP(NeuralProcess):
    """Martingale posterior NP: a CNP whose uncertainty comes from generated pseudo
    context (METHODS.md section 3). ``pseudo`` = M, the size of each pseudo set; 0 (the
    default) makes M equal to the context size C, as METHODS suggests, so the real and
    the generated points carry equal weight in the pooled mean of theta_k.

    ``generator="mixed"``: of the K sets, K_m = ceil(K/2) take the mean base and
    K_p = floor(K/2) the predictive base, with the same three-term loss. Its marginal
    term is then a stratified estimate, log[a (1/K_m) sum_mean e^l_k + (1 - a) (1/K_p)
    sum_pred e^l_k] with a = K_m/K, whose expectation is <= log[a p_mean(Y | D_c) +
    (1 - a) p_pred(Y | D_c)] (Jensen): the bound of the log-likelihood of the a-mixture
    of the two kinds' martingale posteriors, within log(1/a) of the better kind's (and
    likewise for the pseudo term; docs/constructs/neural_process.md)."""

    def __init__(self, x_dim, y_dim, hidden=128, pseudo=0, samples=50, heads=8,
                 generator="mean"):
        super().__init__(x_dim, y_dim, hidden, pseudo, samples, heads, generator)
        self.enc = PoolingEncoder(self.x_dim, self.y_dim, self.hidden, self.hidden)
        self.gen = PseudoContextGenerator(self.hidden, self.heads)
        self.gen.mode = generator
        self.dec = Decoder(self.x_dim, self.hidden, self.y_dim, self.hidden)

    def _sets(self, xc, yc, num_samples):
        """(theta_c [B, h], theta_k [K, B, h], theta'_k [K, B, h], R' [K, B, M, h])."""
        rc = self.enc.embed(xc, yc)                                     # [B, C, h]
        K, M = num_samples, self.pseudo or rc.shape[-2]
        eps = torch.randn((K,) + rc.shape[:-2] + (M, self.hidden),
                          dtype=rc.dtype, device=rc.device)
        rce = rc.unsqueeze(0).expand((K,) + rc.shape)
        theta_c = self.enc.post(rc.mean(-2))
        kinds = self.gen.predictive_sets(K)
        base = None
        if all(kinds):
            base = self._imputed(xc, yc, theta_c, K, M)
        elif any(kinds):
            # mixed mode: imputations only for the predictive-base sets, the context's
            # mean representation (the default base) for the others
            imputed = iter(self._imputed(xc, yc, theta_c, sum(kinds), M))
            mean = rc.mean(-2, keepdim=True).expand(rc.shape[:-2] + (M, self.hidden))
            base = torch.stack([next(imputed) if pred else mean for pred in kinds])
        rp = self.gen(rce, eps, base)                                   # [K, B, M, h]
        if self.gen.tag_kinds and self.gen.mixed:
            pred = torch.tensor(kinds, dtype=rp.dtype, device=rp.device)
            rp = rp + pred[:, None, None, None] * self.gen.kind_tag
        both = torch.cat([rce, rp], -2)
        return theta_c, self.enc.post(both.mean(-2)), self.enc.post(rp.mean(-2)), rp

    def _imputed(self, xc, yc, theta_c, K, M):
        """Encoded imputations [K, B, M, h] from the amortised one-step predictive:
        x~_j ~ U(box of the context's inputs), y~_j = mu_c(x~_j) + sigma_c(x~_j) e_j,
        e_j ~ N(0, I), R_j = pre(x~_j, y~_j) (Fong et al.'s martingale posterior
        imputes future data from the predictive, so the spread of the pseudo sets scales
        with sigma_c where the context is unpredictable). mu_c, sigma_c are detached:
        the amortisation term alone trains the predictive that the imputation uses."""
        lo, hi = xc.min(-2, keepdim=True).values, xc.max(-2, keepdim=True).values
        u = torch.rand(xc.shape[:-2] + (K * M, xc.shape[-1]), dtype=xc.dtype,
                       device=xc.device)
        x = lo + (hi - lo) * u                                          # [B, K M, dx]
        with torch.no_grad():
            mu, sigma = self._amortised(xc, yc, x, theta_c)
        y = mu + sigma * torch.randn_like(mu)
        r = self.enc.embed(x, y)                                        # [B, K M, h]
        return r.unflatten(-2, (K, M)).movedim(-3, 0)

    def _amortised(self, xc, yc, x, theta_c):
        """The amortised predictive (mu, sigma) at x [B, N, dx] from theta_c [B, h]."""
        return self._decode(x, theta_c, self._det(xc, yc, x))

    def _det(self, xc, yc, x):
        """The deterministic path the decoder sees beside theta: none here (AMPNP's
        cross-attention to the real context overrides it)."""
        return None

    def _loo_amortised(self, xc, yc):
        """The leave-one-out amortised predictive at each context input, decoded from
        theta_c of the other C - 1 real context points (:func:`_loo_pooled`), with no
        pseudo context. The ladder's weights w_j are therefore scored with this
        real-context predictive, while the widths lambda_j rescale every component of
        the MPNP's predictive, i.e. the sigma of each pseudo set's theta_k
        (:meth:`NeuralProcess.predict_mixture`): the weights measure how well the
        amortised part explains the context, not the martingale mixture itself."""
        return _loo_pooled(self.enc, self.dec, xc, yc)

    def thetas(self, xc, yc, num_samples):
        """(theta_c [B, h], theta_k [K, B, h], theta'_k [K, B, h])."""
        return self._sets(xc, yc, num_samples)[:3]

    def _decode(self, x, theta, det=None):
        """theta [..., h] with x [B, N, dx] (and AMPNP's attention output det, [B, N, h]
        or [..., B, N, h]) -> mu, sigma [..., B, N, y]."""
        t = theta.unsqueeze(-2).expand(theta.shape[:-1] + (x.shape[-2], theta.shape[-1]))
        if det is not None:
            t = torch.cat([det.expand(t.shape[:-1] + det.shape[-1:]), t], -1)
        return self.dec(x.expand(t.shape[:-1] + x.shape[-1:]), t)

    def predict(self, xc, yc, xt, num_samples=None):
        xc, yc, xt = self._cast(xc, yc, xt)
        _, theta_k, _ = self.thetas(xc, yc, num_samples or self.samples)
        return self._decode(xt, theta_k, self._det(xc, yc, xt))

    def loss(self, xc, yc, x, y, num_samples=4):
        """The three-term loss; the deterministic path (if any) reads the real context in
        every term."""
        xc, yc, x, y = self._cast(xc, yc, x, y)
        theta_c, theta_k, theta_p = self.thetas(xc, yc, num_samples)
        r = self._det(xc, yc, x)
        return mpnp_loss(*self._decode(x, theta_c.unsqueeze(0), r),
                         *self._decode(x, theta_k, r), *self._decode(x, theta_p, r), y,
                         self.gen.loss_strata(num_samples))


class AMPNP(MPNP):
    """Attentive MPNP: the decoder sees [x, r*(x), theta], with r*(x) ANP's multi-head
    cross-attention from the target input to the real context (deterministic path) and
    theta MPNP's pooled representation of context u pseudo-context (theta_c, theta_k or
    theta'_k in the three-term loss). So AMPNP is to MPNP what ANP is to NP: attention
    gives the local fit, and the pseudo-context, in place of ANP's latent z, gives the
    spread of the predictive (a mixture over the K pseudo sets).

    The attention here reads the real context only; :class:`AMPNPPseudoAttention` lets
    it read the pseudo-context too. Measured at 3000 steps (benchmarks/RESULTS.md, issue
    6), that variant fits the training kernel better but is further below ANP under the
    periodic and t-noise mismatches, so this one stays the default (``martingale_anp``)."""

    def __init__(self, x_dim, y_dim, hidden=128, pseudo=0, samples=50, heads=8,
                 generator="mean"):
        super().__init__(x_dim, y_dim, hidden, pseudo, samples, heads, generator)
        self.att = CrossAttnEncoder(self.x_dim, self.y_dim, self.hidden, self.heads)
        self.dec = Decoder(self.x_dim, 2 * self.hidden, self.y_dim, self.hidden)

    def _det(self, xc, yc, x):
        return self.att(xc, yc, x)

    # the attention path has no closed-form leave-one-out: no width ladder
    _loo_amortised = NeuralProcess._loo_amortised


class AMPNPPseudoAttention(AMPNP):
    """Attentive MPNP whose pseudo-context enters both paths. The decoder sees
    [x, r*(x; S), theta(S)] for a set S of encoded points, with

        r*(x; S) = LN(h + rFF(h)), h = LN(q + MHA(q(x), keys(S), values(S))),
        keys/values of a real point (x_i, y_i): k(x_i), v([x_i, y_i]) (ANP's block),
        keys/values of a pseudo point R'_j:     W_k R'_j, W_v R'_j (learned linear maps),

    and S one of: the real context (theta_c, r*_c: the amortised term), the context u the
    k-th pseudo set (theta_k, r*_k: the marginal term and the predictive) or the k-th
    pseudo set alone (theta'_k, r*'_k: the pseudo term), so every mixture component has
    its own attention output. Lee et al.'s attentive MPNP as far as it can be
    reconstructed; the generator makes representations, not (x, y) points, so the
    pseudo keys/values are linear read-outs of R'_j. Benchmark model ``ampnp_pa``;
    docs/constructs/neural_process.md."""

    def __init__(self, x_dim, y_dim, hidden=128, pseudo=0, samples=50, heads=8,
                 generator="mean"):
        # layers in the order of the recorded run (RESULTS, issue 6), so that its seed
        # reproduces it: attention, pseudo read-outs, then the decoder
        MPNP.__init__(self, x_dim, y_dim, hidden, pseudo, samples, heads, generator)
        self.att = CrossAttnEncoder(self.x_dim, self.y_dim, self.hidden, self.heads)
        self.pseudo_k = nn.Linear(self.hidden, self.hidden)
        self.pseudo_v = nn.Linear(self.hidden, self.hidden)
        self.dec = Decoder(self.x_dim, 2 * self.hidden, self.y_dim, self.hidden)

    def attend(self, xc, yc, x, rp=None, real=True):
        """r*(x; S) [..., B, N, h]: cross-attention from x [B, N, dx] to the real
        context (``real``) and/or the pseudo sets rp [K, B, M, h] (one output per set);
        with the real context alone it is ``self.att(xc, yc, x)``."""
        return self._attend_sets(self._projections(xc, yc, x, rp), rp is not None, real)[0]

    def _projections(self, xc, yc, x, rp):
        """Queries q(x), the real context's keys k(x_c) and values v([x_c, y_c]), and (with
        rp) the pseudo points' W_k R', W_v R': each computed once per call."""
        proj = {"q": self.att.q(x), "k": self.att.k(xc), "v": self.att.v(torch.cat([xc, yc], -1))}
        if rp is not None:
            proj["pk"], proj["pv"] = self.pseudo_k(rp), self.pseudo_v(rp)
        return proj

    def _attend_sets(self, proj, pseudo: bool, *reals: bool):
        """One r* per entry of ``reals``: over the real context alone (no ``pseudo``), or
        over the pseudo sets with (True) or without (False) the real context."""
        if not pseudo:
            return [self.att.block(proj["q"], proj["k"], proj["v"])]
        lead = proj["pk"].shape[:-2]
        q = proj["q"].expand(lead + proj["q"].shape[-2:])
        kr = proj["k"].expand(lead + proj["k"].shape[-2:])
        vr = proj["v"].expand(lead + proj["v"].shape[-2:])
        out = []
        for real in reals:
            k = torch.cat([kr, proj["pk"]], -2) if real else proj["pk"]
            v = torch.cat([vr, proj["pv"]], -2) if real else proj["pv"]
            out.append(self.att.block(q, k, v))
        return out

    def predict(self, xc, yc, xt, num_samples=None):
        xc, yc, xt = self._cast(xc, yc, xt)
        _, theta_k, _, rp = self._sets(xc, yc, num_samples or self.samples)
        return self._decode(xt, theta_k, self.attend(xc, yc, xt, rp))

    def loss(self, xc, yc, x, y, num_samples=4):
        """The three-term loss with the same set in both paths: real context / context u
        pseudo_k / pseudo_k."""
        xc, yc, x, y = self._cast(xc, yc, x, y)
        theta_c, theta_k, theta_p, rp = self._sets(xc, yc, num_samples)
        proj = self._projections(xc, yc, x, rp)
        r_c = self._attend_sets(proj, False)[0]
        r_k, r_p = self._attend_sets(proj, True, True, False)
        return mpnp_loss(*self._decode(x, theta_c.unsqueeze(0), r_c),
                         *self._decode(x, theta_k, r_k), *self._decode(x, theta_p, r_p), y,
                         self.gen.loss_strata(num_samples))


def mpnp_loss(mu_c, s_c, mu_k, s_k, mu_p, s_p, y, strata: list[bool] | None = None):
    """The three-term MPNP loss per point, averaged over tasks (shapes [S, B, N, y]).

    With ``strata`` (the kind of each of the K sets) the marginal and pseudo terms are
    sum_j a_j log (1/K_j) sum_{k in kind j} e^l_k, a_j = K_j / K: each kind's own bound,
    weighted by its share, which by the concavity of log is still <= log sum_j a_j p_j,
    the bound of the same mixture as the joint term, but looser, and each kind gets its
    share of the gradient whether or not it explains the task better
    (docs/constructs/neural_process.md, "Two kinds of pseudo set")."""
    n = y.shape[-2]
    amort = _gauss_ll(mu_c[0], s_c[0], y).sum(-1)

    def bound(mu, s):
        ll = _gauss_ll(mu, s, y).sum(-1)
        if strata is None or len(set(strata)) < 2:
            return logmeanexp(ll, 0)
        # the kinds' rows and shares from the host-side list: no device read per step
        total = 0.0
        for flag in (True, False):
            rows = [k for k, kind in enumerate(strata) if kind == flag]
            take = torch.tensor(rows, device=ll.device)
            total = total + len(rows) / len(strata) * logmeanexp(ll.index_select(0, take), 0)
        return total

    return -((amort + bound(mu_k, s_k) + bound(mu_p, s_p)) / n).mean()


MODELS = {"cnp": CNP, "np": NP, "anp": ANP, "mpnp": MPNP, "ampnp": AMPNP,
          "ampnp_pa": AMPNPPseudoAttention,
          "martingale_np": MPNP, "martingale_anp": AMPNP}


# ---- task sources -------------------------------------------------------------------

KERNELS = ("rbf", "matern52", "periodic", "tnoise")


def kernel_matrix(kind: str, x: torch.Tensor, lengthscale, scale, period=None):
    """k(x, x') for x [B, N, 1] and per-task hyperparameters [B]: RBF
    s^2 exp(-d^2/(2 l^2)), Matern-5/2 s^2 (1 + r + r^2/3) exp(-r) with r = sqrt5 d/l,
    periodic s^2 exp(-2 sin^2(pi d / p) / l^2)."""
    d = (x - x.transpose(-1, -2)).abs()
    ls, s2 = lengthscale[:, None, None], (scale ** 2)[:, None, None]
    if kind in ("rbf", "tnoise"):
        return s2 * torch.exp(-0.5 * (d / ls) ** 2)
    if kind == "matern52":
        r = math.sqrt(5.0) * d / ls
        return s2 * (1 + r + r ** 2 / 3) * torch.exp(-r)
    if kind == "periodic":
        return s2 * torch.exp(-2 * torch.sin(math.pi * d / period[:, None, None]) ** 2 / ls ** 2)
    raise ValueError(f"unknown GP kernel {kind!r} (expected one of {', '.join(KERNELS)})")


@dataclass
class Batch:
    """A batch of tasks: context (xc, yc) and all points (x, y) = context u target, the
    context first (xt, yt are the targets alone)."""

    xc: torch.Tensor
    yc: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor

    @property
    def num_ctx(self) -> int:
        return self.xc.shape[-2]

    @property
    def xt(self):
        return self.x[..., self.num_ctx:, :]

    @property
    def yt(self):
        return self.y[..., self.num_ctx:, :]


class GPTasks:
    """1-D GP regression tasks (METHODS.md 3): x ~ U(-2, 2), up to ``max_points`` points,
    3..max_points-4 context points, at least 3 targets; per task l ~ U(lengthscale),
    s ~ U(scale), p ~ U(period); y = f + noise with noise N(0, noise^2) or, for
    ``tnoise``, gamma * StudentT(2.1), gamma ~ U(0, tnoise_scale), on an RBF f."""

    def __init__(self, kernel="rbf", lengthscale=(0.1, 0.6), scale=(0.1, 1.0),
                 period=(0.1, 0.5), noise=0.02, tnoise_scale=0.15, max_points=50,
                 x_range=(-2.0, 2.0)):
        if kernel not in KERNELS:
            raise ValueError(f"unknown GP kernel {kernel!r} (expected one of "
                             f"{', '.join(KERNELS)})")
        self.kernel, self.lengthscale, self.scale = kernel, lengthscale, scale
        self.period, self.noise, self.tnoise_scale = period, noise, tnoise_scale
        self.max_points, self.x_range = int(max_points), x_range

    @staticmethod
    def _uniform(n, lo_hi, gen):
        lo, hi = lo_hi
        return lo + (hi - lo) * torch.rand(n, generator=gen, device="cpu")

    def sample_f(self, x: torch.Tensor, gen=None, hyper=None):
        """GP draws at x [B, N, 1] with per-task hyperparameters (plus the Gaussian noise
        sd ``noise`` on the diagonal); returns (y, hyper)."""
        B = x.shape[0]
        if hyper is None:
            hyper = {"lengthscale": self._uniform(B, self.lengthscale, gen),
                     "scale": self._uniform(B, self.scale, gen),
                     "period": self._uniform(B, self.period, gen)}
        hyper = {k: v.to(x) for k, v in hyper.items()}
        noise = self.noise if self.kernel != "tnoise" else 0.0

        def covariance(dtype):
            h = {k: v.to(dtype) for k, v in hyper.items()}
            cov = kernel_matrix(self.kernel, x.to(dtype), h["lengthscale"], h["scale"],
                                h["period"])
            return cov + (noise ** 2 + 1e-5) * torch.eye(x.shape[-2], dtype=dtype,
                                                         device=x.device)

        L, info = torch.linalg.cholesky_ex(covariance(x.dtype))
        if bool((info != 0).any()):
            # a scale large against the noise (scale=[0.1, 100] in float32): the same
            # covariance built and factored in float64; tasks that factor keep their numbers
            L64, info = torch.linalg.cholesky_ex(covariance(torch.float64))
            if bool((info != 0).any()):
                b = int((info != 0).nonzero()[0, 0])
                raise GPTaskError(
                    f"gp_tasks: the covariance of a {self.kernel} task with scale "
                    f"{float(hyper['scale'].flatten()[b]):g} and lengthscale "
                    f"{float(hyper['lengthscale'].flatten()[b]):g} is not positive-definite "
                    f"(noise {noise:g}): narrow the scale range, or raise noise")
            L = L64.to(x.dtype)
        eps = torch.randn(x.shape, generator=gen, device="cpu").to(x)
        return L @ eps, hyper

    def sample(self, batch: int, gen: torch.Generator | None = None,
               device=None, dtype=None) -> Batch:
        n_ctx = int(torch.randint(3, self.max_points - 3, (1,), generator=gen, device="cpu"))
        n_tar = int(torch.randint(3, self.max_points - n_ctx + 1, (1,), generator=gen,
                                  device="cpu"))
        n = n_ctx + n_tar
        lo, hi = self.x_range
        x = (lo + (hi - lo) * torch.rand(batch, n, 1, generator=gen, device="cpu")).to(
            device=device, dtype=dtype or torch.get_default_dtype())
        y = self.heavy_noise(self.sample_f(x, gen)[0], gen)
        return Batch(x[:, :n_ctx], y[:, :n_ctx], x, y)

    def heavy_noise(self, y: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        """y plus the source's non-Gaussian noise: for ``tnoise``, gamma * StudentT(2.1)
        with gamma ~ U(0, tnoise_scale) per task (y [B, N, d]); y itself otherwise (the
        Gaussian noise is already in :meth:`sample_f`)."""
        if self.kernel != "tnoise":
            return y
        gamma = self.tnoise_scale * torch.rand(y.shape[0], 1, 1, generator=gen, device="cpu")
        return y + (gamma * _student_t(2.1, y.shape, gen)).to(y)


class GPTaskError(ValueError):
    """GP tasks that cannot be drawn with the ``gp_tasks(...)`` arguments given (a
    covariance that is not positive-definite even in float64): the task source's fault,
    reported at the ``tasks=`` option by ``np_train``."""


def _student_t(df: float, shape, gen) -> torch.Tensor:
    """StudentT(df) draws reproducible from ``gen``: torch's gamma sampler takes no
    generator, so the global stream is forked and seeded from ``gen``."""
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=gen, device="cpu"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return dist.StudentT(torch.tensor(float(df), device="cpu")).sample(shape)


class TaskFileError(ValueError):
    """A task file that cannot be read as tasks (missing arrays, not an .npz): the user's
    file, not a bug; ``np_train`` reports it at the ``tasks=task_file(...)`` option."""


class FileTasks:
    """Tasks from an ``.npz`` with arrays xc [T, C, dx], yc [T, C, dy], xt [T, N, dx],
    yt [T, N, dy]; a batch is ``batch`` tasks drawn with replacement."""

    def __init__(self, path):
        import numpy as np

        try:
            z = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            # numpy's "pickled (object) data" or a file that is no array archive at all
            why = ("it holds pickled Python objects" if "pickle" in str(e) else str(e))
            raise TaskFileError(f"{path}: not a task file (an .npz of numeric arrays xc, "
                                f"yc, xt, yt): {why}") from None
        if not hasattr(z, "files"):  # a single .npy array, not an archive
            raise TaskFileError(f"{path}: not a task file: one array, not an .npz archive "
                                "of arrays xc, yc, xt, yt")
        with z:
            missing = [k for k in ("xc", "yc", "xt", "yt") if k not in z.files]
            if missing:
                raise TaskFileError(f"{path}: task file lacks arrays {', '.join(missing)} "
                                    "(expected xc, yc, xt, yt, each [tasks, points, dim]; "
                                    f"it has {', '.join(z.files) or 'none'})")
            try:
                self.arrays = {k: torch.as_tensor(z[k]) for k in ("xc", "yc", "xt", "yt")}
            except (ValueError, TypeError) as e:  # object arrays, strings
                why = "they hold pickled Python objects" if "allow_pickle" in str(e) else e
                raise TaskFileError(f"{path}: task file arrays must be numeric: {why}") \
                    from None
        self.num_tasks = self.arrays["xc"].shape[0]

    def sample(self, batch: int, gen=None, device=None, dtype=None) -> Batch:
        idx = torch.randint(0, self.num_tasks, (batch,), generator=gen, device="cpu")
        a = {k: v[idx].to(device=device, dtype=dtype or torch.get_default_dtype())
             for k, v in self.arrays.items()}
        return Batch(a["xc"], a["yc"], torch.cat([a["xc"], a["xt"]], -2),
                     torch.cat([a["yc"], a["yt"]], -2))


def save_tasks(path, batch: Batch) -> None:
    """Write a batch of tasks as an ``.npz`` task file."""
    import numpy as np

    np.savez(path, xc=batch.xc.cpu().numpy(), yc=batch.yc.cpu().numpy(),
             xt=batch.xt.cpu().numpy(), yt=batch.yt.cpu().numpy())


def train(model: NeuralProcess, tasks, steps: int, batch: int, lr: float = 5e-4,
          num_samples: int = 4, gen: torch.Generator | None = None, callback=None):
    """Adam with cosine decay to 0 over ``steps``; returns the loss per step."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    p = next(model.parameters())
    losses = []
    model.train()
    for step in range(steps):
        b = tasks.sample(batch, gen, device=p.device, dtype=p.dtype)
        loss = model.loss(b.xc, b.yc, b.x, b.y, num_samples)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if callback is not None:
            callback(step, losses[-1])
    model.eval()
    return losses


@torch.no_grad()
def evaluate(model: NeuralProcess, batch: Batch, num_samples: int = 50):
    """Per-task mean per-point log-likelihood (log-mean-exp over draws) of the context
    and of the targets: two tensors of shape [B]."""
    ll = model.pointwise_ll(batch.xc, batch.yc, batch.x, batch.y, num_samples)
    c = batch.num_ctx
    return ll[:, :c].mean(-1), ll[:, c:].mean(-1)


# ---- saving and loading trained networks --------------------------------------------


def save_trained(path, model: NeuralProcess, source: str = "") -> None:
    """Save a trained network: its family, constructor arguments, state dict and the
    model source it came from (``bdl run`` saves the same weights in ``params.pt``)."""
    family = {v: k for k, v in MODELS.items() if not k.startswith("martingale")}[type(model)]
    gen = getattr(model, "gen", None)
    torch.save({"family": family, "source": source,
                "config": {"x_dim": model.x_dim, "y_dim": model.y_dim,
                           "hidden": model.hidden, "pseudo": model.pseudo,
                           "samples": model.samples, "heads": model.heads},
                "generator": gen.mode if gen is not None else "mean",
                "per_kind_bound": bool(getattr(gen, "per_kind_bound", False)),
                "tag_kinds": bool(getattr(gen, "tag_kinds", False)),
                "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}},
               path)


def load_trained(path, device=None) -> tuple[NeuralProcess, str]:
    """(network, model source) saved by :func:`save_trained`; the network is in eval mode
    with the default dtype (or the saved one) on ``device``."""
    blob = torch.load(path, weights_only=True, map_location="cpu")
    family = blob["family"]
    if family == "ampnp" and any(k.startswith("pseudo_k.") for k in blob["state_dict"]):
        family = "ampnp_pa"  # saved while ampnp named the pseudo-attention variant
    # files from before the "generator" key recorded the mode as one flag per base
    mode = blob.get("generator") or next(
        (m for m in ("mixed", "predictive", "resample") if blob.get(m, False)), "mean")
    model = MODELS[family](**blob["config"], generator=mode)
    if "generator" not in blob and "resample" not in blob and hasattr(model, "gen"):
        warnings.warn(f"{path}: saved before the generator's base mode was recorded; "
                      "the default (mean) base is assumed", stacklevel=2)
    resample = mode == "resample"
    if hasattr(model, "gen"):
        model.gen.per_kind_bound = bool(blob.get("per_kind_bound", False))
        model.gen.tag_kinds = bool(blob.get("tag_kinds", False))
    missing, unexpected = model.load_state_dict(blob["state_dict"], strict=False)
    # the generator's resampling read-outs (gen.pick_*) are used only with resample =
    # True; files saved before they existed lack them and load exactly without them
    missing = [k for k in missing if resample or not k.startswith("gen.pick_")]
    # likewise the kind offset (gen.kind_tag), used only with tag_kinds = True
    missing = [k for k in missing if blob.get("tag_kinds", False) or k != "gen.kind_tag"]
    if missing or unexpected:
        raise ValueError(f"{path}: the saved {family} does not match this version's "
                         f"network (missing {missing[:3]}, unexpected {unexpected[:3]}); "
                         "retrain it")
    return model.to(device=device).eval(), blob["source"]
