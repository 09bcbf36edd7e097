"""Latent SDEs driven by fractional noise: the ``fractional_sde`` construct's runtime.

Maths: ``../shared/METHODS.md`` section 2 (Daems et al., ICLR 2024). Per latent dimension
the augmented state ``Z = (X, Y_1..Y_K)`` is Markov with one shared Brownian motion W:

    prior      dY_k = -gamma_k Y_k dt + dW,        dX = [b - s sum_k w_k gamma_k Y_k] dt + s wbar dW
    posterior  dY_k = (-gamma_k Y_k + u) dt + dW,  dX = [b + s sum_k w_k (u - gamma_k Y_k)] dt
                                                         + s wbar dW

with ``b = drift(X, t)``, ``s = diffusion(X, t)`` (elementwise), ``w = omega(H)`` the MA-fBM
weights (:mod:`ppl.runtime.mafbm`), ``wbar = sum_k w_k`` and ``u(Z, t)`` a control network
(one scalar per latent dimension, last layer zero so that q = p at the start). By Girsanov
``KL(Q || P) = E_Q 1/2 int |u|^2 dt + KL(q(x0) || p(x0))``; the integrand ``1/2 |u|^2`` is
carried as one extra state. With ``control_form="drift"`` the network outputs the change
of X's drift instead, ``Delta = s wbar u``, and u = Delta / (s wbar(H))
(:func:`drift_to_control`): the same posteriors at a given H, other coordinates when H
moves. The SDE is solved with ``torchsde.sdeint`` (Euler-Maruyama;
``noise_type="general"``: the D Brownian motions drive X and every Y_k of their dimension).

Inside a model, :func:`fractional_sde` simulates one posterior path, registers the control
network with ``pyro.module``, adds ``pyro.factor(name + "_kl", -(path KL + x0 KL))`` and
returns the path [T, D] (also recorded as ``pyro.deterministic(name)``); with the
observation sites of the model, Trace_ELBO with an empty guide is then the ELBO of
METHODS.md section 2.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch
import torchsde
from pyro.distributions import constraints
from torch import nn

from . import mafbm
from .nn import network


class Control(nn.Module):
    """u(Z, t): an MLP on [tau, sin(pi f tau), cos(pi f tau) (f = 1..F), x, y] -> D, with
    tau = (t - t0) / (t1 - t0) and the last layer zero-initialised (q = p at the start).

    With ``data=True`` the inputs also hold ``d(t) - x``, ``y_next - x`` and
    ``tau_next - tau``, where d is the piecewise-linear interpolant of the observations and
    y_next the next observation, at tau_next (set by :meth:`set_data`). (A hand-made
    bridge term ``(y_next - x) / (tau_next - tau)`` added to u is unstable here: the control
    acts on X through the fractional kernel sum_k w_k e^(-g_k s), which has memory.) The data
    are fixed, so u is still a function of (t, Z) and the Girsanov KL holds; the features
    only make tracking the observations easy to learn instead of fitting it from time
    features alone.
    """

    def __init__(self, D: int, K: int, hidden=(64, 64), n_freq: int = 6, data: bool = False):
        super().__init__()
        self.D, self.K, self.n_freq, self.data = D, K, n_freq, bool(data)
        sizes = [1 + 2 * n_freq + D + D * K + (2 * D + 1 if data else 0), *hidden, D]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(nn.Tanh())
        nn.init.zeros_(layers[-1].weight)
        nn.init.zeros_(layers[-1].bias)
        self.net = nn.Sequential(*layers)
        self._obs_tau = self._obs_y = None

    def set_data(self, obs_tau: torch.Tensor, obs_y: torch.Tensor) -> None:
        """Observation times (rescaled to tau in [0, 1], increasing) [N] and values [N, D],
        or [N, B, D]: one series per path of a batch of B (independent series observed
        at the same times)."""
        self._obs_tau, self._obs_y = obs_tau, obs_y

    def _data_table(self, tau: torch.Tensor, dtype) -> tuple:
        """At each tau [P]: the interpolant d(tau) and the next observation (strictly after
        tau; the last one beyond it), each [P, 1 or B, D], and the time to it [P]."""
        if self._obs_tau is None:
            raise RuntimeError("Control(data=True) needs set_data(...) before use")
        ot, oy = self._obs_tau.to(dtype), self._obs_y.to(dtype)
        tau = tau.to(dtype).reshape(-1)
        P, D = len(tau), oy.shape[-1]
        j = torch.searchsorted(ot, tau).clamp(1, len(ot) - 1)   # ot[j-1] <= tau < ot[j]
        t0, t1 = ot[j - 1], ot[j]
        wgt = ((tau - t0) / (t1 - t0).clamp(min=1e-12)).clamp(0.0, 1.0)
        wgt = wgt.reshape(P, *[1] * (oy.dim() - 1))
        d = (oy[j - 1] * (1 - wgt) + oy[j] * wgt).reshape(P, -1, D)
        # (tau within 1e-6 of an observation time counts as on it: float round-off)
        nxt = torch.searchsorted(ot, tau + 1e-6, right=True).clamp(max=len(ot) - 1)
        return d, oy[nxt].reshape(P, -1, D), (ot[nxt] - tau).clamp(min=0.0)

    def _data_features(self, tau: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """[d(t) - x, y_next - x, tau_next - tau] at one tau for the states x [B, D]."""
        d, nxt, gap = self._data_table(tau, x.dtype)
        B = x.shape[0]
        return torch.cat([d[0].expand(B, -1) - x, nxt[0].expand(B, -1) - x,
                          gap.reshape(1, 1).expand(B, 1)], -1)

    def _time_features(self, tau: torch.Tensor, dtype) -> torch.Tensor:
        """[tau, sin(pi f tau), cos(pi f tau)] for tau [P]: [P, 1 + 2F]."""
        f = torch.arange(1, self.n_freq + 1, dtype=dtype, device=tau.device) * math.pi
        tt = tau.to(dtype).reshape(-1, 1)
        return torch.cat([tt, torch.sin(tt * f), torch.cos(tt * f)], -1)

    def forward(self, tau: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        parts = [self._time_features(tau, x.dtype).expand(B, -1), x, y.reshape(B, -1)]
        if self.data:
            parts.append(self._data_features(tau, x))
        return self.net(torch.cat(parts, -1))

    def plan(self, taus: torch.Tensor, dtype) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """The first layer split into its state-free and state parts, for a solve whose
        control is evaluated only at the times ``taus`` [P] (the Euler grid).

        The first layer is affine in its inputs, so with W = [W_t, W_x, W_y, W_d, W_n, W_g]
        (columns of the time features, x, y, d - x, y_next - x, gap) its pre-activation is
        ``A(tau) + [x, y] S`` with A(tau) = W_t feat(tau) + W_d d(tau) + W_n y_next(tau)
        + W_g gap(tau) + bias and S = [W_x - W_d - W_n, W_y]^T. A is built for every tau by
        one matrix product per solve, so an Euler step costs one ``addmm`` for the first
        layer instead of building and concatenating the features (same values up to
        float round-off; :meth:`planned`). Returns (A, the P tensors [1 or B, H1],
        S [D + D K, H1]), differentiable in the weights. (A is unbound once: indexing a
        [P, ...] tensor at every step would give each step's backward a full-size
        gradient, P^2 work per solve.)"""
        lin = self.net[0]
        W, b = lin.weight.to(dtype), lin.bias.to(dtype)
        nt, D = 1 + 2 * self.n_freq, self.D
        ns = D + D * self.K
        A = (self._time_features(taus, dtype) @ W[:, :nt].T + b)[:, None, :]
        Wx = W[:, nt:nt + D]
        if self.data:
            Wd, Wn = W[:, nt + ns:nt + ns + D], W[:, nt + ns + D:nt + ns + 2 * D]
            d, nxt, gap = self._data_table(taus, dtype)
            A = A + d @ Wd.T + nxt @ Wn.T + gap[:, None, None] * W[:, nt + ns + 2 * D]
            Wx = Wx - Wd - Wn
        return A.unbind(0), torch.cat([Wx, W[:, nt + D:nt + ns]], 1).T

    def planned(self, plan: tuple[tuple[torch.Tensor, ...], torch.Tensor], i: int,
                xy: torch.Tensor) -> torch.Tensor:
        """u at the i-th time of :meth:`plan` for the states ``xy`` = [x, y] [B, D + D K]:
        equal to ``forward`` there."""
        A, S = plan
        h = torch.addmm(A[i], xy, S)
        for layer in list(self.net)[1:]:
            h = layer(h)
        return h


def _is_network(spec) -> bool:
    """A BDL network value: an ``nn.Module`` (``mlp``), or a network whose weights carry a
    prior (``f ~ gaussian_prior(...)``: callable on x alone, with ``in_dim``)."""
    return isinstance(spec, nn.Module) or (callable(spec) and hasattr(spec, "in_dim")
                                           and hasattr(spec, "out_dim"))


def _as_field(spec, D: int, what: str) -> Callable:
    """drift/diffusion: a number/tensor (constant), a network of x ([D] in) or of (x, t)
    ([D+1] in), or a Python callable f(x, t); the result is broadcast to [B, D]."""
    if _is_network(spec):
        in_dim = getattr(spec, "in_dim", None)
        if in_dim is None:
            mods = spec.modules() if isinstance(spec, nn.Module) else ()
            lin = next((m for m in mods if isinstance(m, nn.Linear)), None)
            in_dim = lin.in_features if lin is not None else D
        if in_dim == D:
            return lambda x, t: spec(x)
        if in_dim == D + 1:
            return lambda x, t: spec(torch.cat([x, t.to(x.dtype).expand(x.shape[0], 1)], -1))
        raise ValueError(f"fractional_sde: the {what} network takes {in_dim} inputs; it must "
                         f"take the state ({D}) or the state and time ({D + 1})")
    if callable(spec):
        return spec
    c = torch.as_tensor(spec, dtype=torch.get_default_dtype())

    def const(x, t):
        # follow the state's device too: an expanded CPU constant cannot meet a CUDA state
        cc = c.to(device=x.device, dtype=x.dtype)
        return cc.expand(x.shape[0], D) if cc.dim() <= 1 else cc

    const.constant = True
    return const


def per_state(f: Callable, D: int) -> Callable:
    """A BDL function literal ``(x, t) => body`` as a drift/diffusion field on [B, D].

    In the language the body sees one state x [D] and the time t [] (docs/language.md,
    "Function literals"), so that indexing and reductions mean what they say; the solver
    holds a batch of states, so the literal is applied per row (``torch.func.vmap``; a
    single row is called directly). The value is broadcast to [D].
    """
    def field(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        def one(xi):
            return torch.as_tensor(f(xi, t), dtype=x.dtype, device=x.device).expand(D)
        if x.shape[0] == 1:
            return one(x[0]).unsqueeze(0)
        return torch.func.vmap(one)(x)

    return field


NOISE_TYPES = ("general", "additive")
CONTROL_FORMS = ("noise", "drift")


def drift_to_control(delta: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """The control u whose drift change on X is ``delta``: u = gain^+ delta.

    In the posterior SDE (METHODS.md s2) u enters the shared Brownian motion, so X's
    drift changes by ``s sum_k w_k u = s wbar u`` (each Y_k's by u). With one noise per
    latent dimension the noise-to-X matrix is diagonal, ``gain = s wbar`` [B, D], and its
    Moore-Penrose pseudo-inverse divides where ``|gain|`` is above the usual pinv cut-off
    (eps times the row's largest |gain|) and gives 0 elsewhere: the smallest |u|, hence
    the smallest KL 1/2 |u|^2, producing the reachable part of ``delta``."""
    gain = torch.broadcast_to(gain, delta.shape)
    big = gain.abs().amax(-1, keepdim=True)
    ok = gain.abs() > torch.finfo(delta.dtype).eps * big
    safe = torch.where(ok, gain, torch.ones_like(gain))   # no 0/0 in the unused branch
    return torch.where(ok, delta / safe, torch.zeros_like(delta))


class FractionalSDE(nn.Module):
    """The augmented prior (``control=None``) or controlled posterior SDE for torchsde.

    State: [X (D), Y (D x K, row-major), kl (1)]; Brownian motion: D-dimensional.
    """

    sde_type = "ito"
    noise_type = "general"

    def __init__(self, drift, diffusion, w: torch.Tensor, gamma: torch.Tensor, D: int,
                 control: Control | None = None, t0: float = 0.0, t1: float = 1.0,
                 noise: str = "general", control_form: str = "noise"):
        super().__init__()
        if noise not in NOISE_TYPES:
            raise ValueError(f"fractional_sde: noise must be one of {', '.join(NOISE_TYPES)}, "
                             f"got {noise!r}")
        if control_form not in CONTROL_FORMS:
            raise ValueError(f"fractional_sde: control must be one of "
                             f"{', '.join(CONTROL_FORMS)}, got {control_form!r}")
        self.control_form = control_form
        # torchsde's noise type; Euler steps are the same for both, "additive" declares
        # that g does not depend on the state (checked in simulate)
        self.noise_type = noise
        self.drift, self.diffusion = drift, diffusion
        self.w, self.gamma, self.D, self.K = w, gamma, D, len(gamma)
        self.wbar = w.sum()  # fixed for the solve; f and g use it at every Euler step
        self.control = control
        self.t0, self.span = t0, max(t1 - t0, 1e-12)
        # a diffusion that depends on neither state nor time: g, s and the drift form's
        # pseudo-inverse are built once per solve
        self.constant_diffusion = getattr(diffusion, "constant", False)
        self._g = self._s = self._pinv = None
        self._plan = None
        self._grid, self._grid_index = None, {}

    def set_grid(self, points: torch.Tensor, index: dict[float, int]) -> None:
        """The Euler grid ``points`` [P] on the state's device and its host-side
        :func:`grid_index`. The solver runs its time loop on host copies of the times (a
        comparison of device scalars is a host sync per step on CUDA); each step's time
        is looked up here and replaced by its device copy. If the control is a
        :class:`Control`, its state-free part is planned on the grid
        (:meth:`Control.plan`); called once per solve, after the weights' last update, so
        gradients reach them through the plan."""
        self._grid, self._grid_index = points, index
        if isinstance(self.control, Control) and len(points):
            self._plan = self.control.plan((points - self.t0) / self.span, points.dtype)

    def _step(self, t, like: torch.Tensor):
        """(the time t on the device of ``like``, its index on the grid or None)."""
        t = torch.as_tensor(t, dtype=like.dtype)
        # a device scalar is not looked up: reading it would be the sync this avoids
        i = self._grid_index.get(float(t)) if t.device.type == "cpu" else None
        if i is not None:
            return self._grid[i], i
        return t.to(like.device), None

    def _split(self, z):
        D, K = self.D, self.K
        return z[:, :D], z[:, D:D + D * K].reshape(-1, D, K)

    def u(self, t, z, s: torch.Tensor, i: int | None = None):
        """The control u(Z, t) [B, D] that enters W's drift (and so X and every Y_k);
        ``i``: t's index on the Euler grid, if it is a grid point.

        ``control_form="drift"``: the network's output is Delta, the change of X's drift,
        and u = Delta / (s wbar) (``s`` the diffusion at the state)."""
        if self.control is None:
            return torch.zeros_like(z[:, :self.D])
        if i is not None and self._plan is not None:   # the planned first layer
            out = self.control.planned(self._plan, i, z[:, :self.D * (1 + self.K)])
        else:
            x, y = self._split(z)
            out = self.control((t - self.t0) / self.span, x, y)
        if self.control_form == "noise":
            return out
        if not self.constant_diffusion:
            return drift_to_control(out, s * self.wbar)
        if self._pinv is None or self._pinv.shape != out.shape:
            gain = torch.broadcast_to(s * self.wbar, out.shape)
            self._pinv = drift_to_control(torch.ones_like(gain), gain)   # 1/gain or 0
        return out * self._pinv

    def _diffusion(self, x, t):
        if not self.constant_diffusion:
            return self.diffusion(x, t)
        if self._s is None or self._s.shape[0] != x.shape[0]:
            self._s = self.diffusion(x, t)
        return self._s

    def _f_s(self, t, z):
        """The drift of Z and the diffusion s at (t, Z)."""
        t, i = self._step(t, z)
        x, y = self._split(z)
        b = self.drift(x, t)
        s = self._diffusion(x, t)
        u = self.u(t, z, s, i)
        dy = u.unsqueeze(-1) - self.gamma * y
        dx = b + s * (self.w * dy).sum(-1)
        dkl = 0.5 * (u ** 2).sum(-1, keepdim=True)
        return torch.cat([dx, dy.reshape(z.shape[0], -1), dkl], -1), s

    def f(self, t, z):
        return self._f_s(t, z)[0]

    def f_and_g_prod(self, t, z, v):
        """(f, g v) for torchsde's Euler step, with g v written out: X gets s wbar dW,
        every Y_k of a dimension that dimension's dW, the KL state nothing (the same
        numbers as the product with :meth:`g`, without the [B, 1 + D (K + 1), D] matrix)."""
        f, s = self._f_s(t, z)
        B = z.shape[0]
        gp = torch.cat([(s * self.wbar) * v,
                        v.unsqueeze(-1).expand(B, self.D, self.K).reshape(B, -1),
                        v.new_zeros(B, 1)], -1)
        return f, gp

    def g(self, t, z):
        B, D, K = z.shape[0], self.D, self.K
        if self.constant_diffusion and self._g is not None and self._g.shape[0] == B:
            return self._g
        x, _ = self._split(z)
        s = self.diffusion(x, self._step(t, z)[0]) * self.wbar
        eye = torch.eye(D, dtype=z.dtype, device=z.device)
        gx = torch.diag_embed(s.expand(B, D))                                  # [B, D, D]
        gy = eye.unsqueeze(1).expand(D, K, D).reshape(1, D * K, D).expand(B, -1, -1)
        gk = torch.zeros(B, 1, D, dtype=z.dtype, device=z.device)
        out = torch.cat([gx, gy, gk], 1)
        if self.constant_diffusion:
            self._g = out
        return out


def euler_points(times: torch.Tensor, dt: float) -> list[torch.Tensor]:
    """The points torchsde's fixed-step loop visits from times[0] to times[-1], computed
    with the same tensor arithmetic (so that lookups by float(t) match bit for bit);
    ``times`` on the host, where :func:`simulate` runs the solver's time loop."""
    cur, pts = times[0], [times[0]]
    for out in times[1:]:
        while cur < out:
            cur = min(cur + dt, times[-1])
            pts.append(cur)
    return pts


def grid_index(points: list[torch.Tensor]) -> dict[float, int]:
    """{t: i} for the Euler points: how the solver's queries at time t find their step."""
    return {float(p): i for i, p in enumerate(points)}


class GridBrownian(torchsde.BrownianInterval.__mro__[1]):  # torchsde's BaseBrownian
    """Brownian motion pre-sampled on the Euler grid t0, t0 + dt, ..., t1 (and the output
    times): ``bm(ta, tb)`` is W(tb) - W(ta) at grid points. torchsde's BrownianInterval
    builds a search tree over the whole interval first, which dominates the cost of a
    fixed-step Euler solve; a fixed grid needs only the increments."""

    __slots__ = ("_index", "_w", "_shape")

    def __init__(self, times: torch.Tensor, dt: float, shape: tuple[int, int], dtype, device,
                 points: list[torch.Tensor] | None = None, index: dict | None = None):
        pts = euler_points(times, dt) if points is None else points
        t = torch.stack(pts).to(torch.float64)
        dw = torch.randn(len(pts) - 1, *shape, dtype=dtype, device=device)
        step = (t[1:] - t[:-1]).clamp(min=0).sqrt()
        dw = dw * step.to(dtype=dtype, device=dw.device).reshape(-1, 1, 1)
        self._index = grid_index(pts) if index is None else index
        self._w = torch.cat([torch.zeros(1, *shape, dtype=dtype, device=device),
                             dw.cumsum(0)])
        self._shape = shape

    def _at(self, t) -> torch.Tensor:
        i = self._index.get(float(t))
        if i is None:
            raise ValueError(f"GridBrownian queried off its grid at t = {float(t)}")
        return self._w[i]

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        if tb is None:
            return self._at(ta)
        return self._at(tb) - self._at(ta)

    def __repr__(self):
        return f"GridBrownian(points={len(self._index)}, shape={self._shape})"

    @property
    def dtype(self):
        return self._w.dtype

    @property
    def device(self):
        return self._w.device

    @property
    def shape(self):
        return self._shape

    @property
    def levy_area_approximation(self):
        return "none"


def check_stability(gamma_max: float, dt: float) -> None:
    """Euler on dY = -gamma Y dt needs gamma_max * dt < 0.5 (METHODS.md section 2)."""
    if gamma_max * dt >= 0.5:
        raise ValueError(
            f"fractional_sde: gamma_max * dt = {gamma_max:g} * {dt:g} = {gamma_max * dt:.3g} "
            f"is not below 0.5, so the Euler steps of the fastest OU process are unstable; "
            f"use dt < {0.5 / gamma_max:.3g} or a smaller gamma_max")


def default_dt(times: torch.Tensor, gamma_max: float) -> float:
    """The smallest gap of the time grid, capped at 0.25 / gamma_max."""
    gaps = (times[1:] - times[:-1]).abs()
    gap = float(gaps.min()) if len(gaps) else 1.0
    return min(gap, 0.25 / gamma_max)


def weights(hurst, K: int, kind: int, T: float, gamma_max: float = 20.0,
            gamma_min: float | None = None, dtype=None, device=None):
    """gamma grid, omega(H) (float64 solve, differentiable in H, cast to ``dtype``), eps."""
    H64 = torch.as_tensor(hurst).to(torch.float64)
    g = mafbm.gamma_grid(K, gamma_max, gamma_min, device=device or H64.device)
    w, eps = mafbm.omega(H64, g, T, kind)
    dtype = dtype or torch.get_default_dtype()
    return g.to(dtype), w.to(dtype), eps


def simulate(times: torch.Tensor, x0: torch.Tensor, drift, diffusion, hurst, *, K: int = 5,
             kind: int = 2, gamma_max: float = 20.0, gamma_min: float | None = None,
             dt: float | None = None, control: Control | None = None, bm=None,
             noise: str = "general", control_form: str = "noise"):
    """Solve the prior (``control=None``) or posterior SDE from x0 [B, D] over ``times``.

    ``noise``: torchsde's noise type, ``"general"`` or ``"additive"`` (a diffusion that
    does not depend on the state; a ValueError otherwise). ``control_form``: what the
    control network outputs, ``"noise"`` (u itself) or ``"drift"`` (Delta, the change of
    X's drift; u = Delta / (s wbar), :func:`drift_to_control`). Both describe the same
    family of posteriors at a given H; they differ in what stays fixed when H, or sigma,
    moves (docs/constructs/fractional_sde.md, "Control forms").

    Returns (paths [T, B, D], path KL [B] = int 1/2 |u|^2 dt, eps).
    """
    times = torch.as_tensor(times, dtype=x0.dtype, device=x0.device)
    B, D = x0.shape
    if dt is None:
        dt = default_dt(times, gamma_max)
    check_stability(gamma_max, float(dt))
    t0, t1 = float(times[0]), float(times[-1])
    g, w, eps = weights(hurst, K, kind, t1 - t0, gamma_max, gamma_min, x0.dtype, x0.device)
    Kk = len(g)
    if kind == 1:  # stationary start Y(0) ~ N(0, Sigma), Sigma_ij = 1 / (gi + gj)
        S = 1.0 / (g[:, None] + g[None, :]).to(torch.float64)
        L = torch.linalg.cholesky(S + 1e-12 * torch.eye(Kk, dtype=S.dtype, device=S.device))
        y0 = torch.randn(B, D, Kk, dtype=torch.float64, device=x0.device) @ L.T
        y0 = y0.to(x0.dtype)
    else:
        y0 = torch.zeros(B, D, Kk, dtype=x0.dtype, device=x0.device)
    # type I: B_hat = sum w (Y - Y(0)) and dB_hat = -sum w g Y dt + wbar dW for any Y(0)
    z0 = torch.cat([x0, y0.reshape(B, -1), torch.zeros(B, 1, dtype=x0.dtype,
                                                        device=x0.device)], -1)
    sde = FractionalSDE(_as_field(drift, D, "drift"), _as_field(diffusion, D, "diffusion"),
                        w, g, D, control, t0, t1, noise=noise, control_form=control_form)
    if noise == "additive" and not sde.constant_diffusion:
        # a probe at three states, shifted by amounts no simple period divides (no RNG
        # draw, so the paths stay those of noise=general under the same seed)
        with torch.no_grad():
            s0 = torch.as_tensor(sde.diffusion(x0, times[0]))
            same = all(torch.allclose(s0, torch.as_tensor(sde.diffusion(x0 + d, times[0])))
                       for d in (0.3719, -1.6180))
        if not same:
            raise ValueError("fractional_sde: noise=additive needs a diffusion that does not "
                             "depend on the state; use noise=general")
    # torchsde's fixed-step loop compares and takes the min of time scalars at every
    # step; on host copies of the times that costs no device sync
    host_times = times.detach().cpu()
    pts = euler_points(host_times, float(dt))
    index = grid_index(pts)
    sde.set_grid(torch.stack(pts).to(x0.device), index)
    if bm is None:
        bm = GridBrownian(host_times, float(dt), (B, D), x0.dtype, x0.device, points=pts,
                          index=index)
    zs = torchsde.sdeint(sde, z0, host_times, method="euler", dt=float(dt), bm=bm)
    return zs[..., :D], zs[-1, :, -1], eps


def _x0_posterior(name: str, x0, D: int, dtype, device):
    """x0 and KL(q(x0) || p(x0)): a distribution gets q = Normal(loc, scale) (pyro.params,
    started at the prior's moments), sampled by reparameterisation; a number is fixed."""
    if isinstance(x0, torch.distributions.Distribution):
        try:
            m0 = x0.mean.to(dtype).expand(D).clone()
            s0 = x0.stddev.to(dtype).expand(D).clone()
        except (NotImplementedError, RuntimeError):
            m0, s0 = torch.zeros(D, dtype=dtype), torch.ones(D, dtype=dtype)
        m0 = torch.where(torch.isfinite(m0), m0, torch.zeros_like(m0))
        s0 = torch.where(torch.isfinite(s0) & (s0 > 0), s0, torch.ones_like(s0))
        loc = pyro.param(f"{name}_x0_loc", m0.to(device))
        scale = pyro.param(f"{name}_x0_scale", s0.to(device), constraint=constraints.positive)
        q = dist.Normal(loc, scale)
        x = q.rsample()
        try:
            kl = torch.distributions.kl_divergence(q, x0).sum()
        except NotImplementedError:
            kl = (q.log_prob(x) - x0.log_prob(x)).sum()
        return x.reshape(1, D), kl
    x = torch.as_tensor(x0, dtype=dtype, device=device).expand(D).reshape(1, D)
    return x, torch.zeros((), dtype=dtype, device=device)


def fractional_sde(name: str, times, drift=0.0, diffusion=1.0, hurst=None, K: int = 5,
                   kind: int = 2, x0=0.0, gamma_max: float = 20.0, gamma_min=None, dt=None,
                   dim: int = 1, hidden=(64, 64), n_freq: int = 6, data=None,
                   data_index=None, noise: str = "general", control: str = "noise"):
    """``name ~ fractional_sde(times=t, ...)`` inside a model: one posterior path [T, dim].

    ``hurst``: a number or tensor (fixed / a ``param``), or None: learned as
    ``pyro.param(name + "_hurst")`` in (0, 1) (sigmoid transform, start 0.5).
    ``data`` (optional, [N] or [N, dim]) observed at ``times[data_index]`` (all times when
    no index is given) adds data features to the control network (see :class:`Control`).
    Adds ``pyro.factor(name + "_kl", -(1/2 int |u|^2 dt + KL(q(x0) || p(x0))))`` and
    records ``name + "_eps"``, the MA-fBM relative error at the current H.
    ``drift``/``diffusion`` given as Python callables are BDL function literals: f(x [dim],
    t []) per state (:func:`per_state`). ``noise``: ``"general"`` or ``"additive"``.
    ``control``: what the control network outputs, ``"noise"`` (u, the paper's form) or
    ``"drift"`` (Delta, the change of X's drift; u = Delta / (sigma wbar(H))).
    """
    kind, K, D = int(kind), int(K), int(dim)
    drift, diffusion = (per_state(f, D) if callable(f) and not _is_network(f)
                        else f for f in (drift, diffusion))
    if kind not in (1, 2):
        raise ValueError(f"fractional_sde: kind must be 1 or 2, got {kind}")
    times = torch.as_tensor(times, dtype=torch.get_default_dtype())
    if times.dim() != 1 or len(times) < 2:
        raise ValueError("fractional_sde: times must be a vector of at least 2 time points")
    if not bool((times[1:] > times[:-1]).all()):
        raise ValueError("fractional_sde: times must be strictly increasing")
    if hurst is None:
        hurst = pyro.param(f"{name}_hurst", torch.tensor(0.5, device=times.device),
                           constraint=constraints.interval(0.0, 1.0))
    H = torch.as_tensor(hurst).clamp(0.01, 0.99)
    hidden = [int(h) for h in torch.as_tensor(hidden).reshape(-1).tolist()]
    use_data = data is not None
    # cached like every network (rt.reset_networks at the start of a fit gives q = p again)
    ctrl = pyro.module(f"{name}_control",
                       network(f"{name}_control", Control, D, K, tuple(hidden), int(n_freq),
                               data=use_data))
    if use_data:
        obs = torch.as_tensor(data, dtype=times.dtype).reshape(-1, D)
        ot = times if data_index is None else times[torch.as_tensor(data_index).long()]
        if len(ot) != len(obs):
            raise ValueError(f"fractional_sde: data has {len(obs)} rows but "
                             f"{len(ot)} observation times")
        order = torch.argsort(ot)
        ctrl.set_data((ot[order] - times[0]) / (times[-1] - times[0]), obs[order])
    x, kl0 = _x0_posterior(name, x0, D, times.dtype, times.device)
    paths, kl, eps = simulate(times, x, drift, diffusion, H, K=K, kind=kind,
                            gamma_max=float(gamma_max),
                            gamma_min=None if gamma_min is None else float(gamma_min),
                            dt=None if dt is None else float(dt), control=ctrl, noise=noise,
                            control_form=str(control))
    pyro.factor(f"{name}_kl", -(kl.sum() + kl0))
    # the relative error of the MA-fBM at the current H, reported beside the path
    pyro.deterministic(f"{name}_eps", eps.detach().to(times.dtype))
    return pyro.deterministic(name, paths[:, 0, :])
