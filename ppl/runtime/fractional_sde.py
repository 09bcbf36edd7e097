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
from .errors import ArgumentError
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


class AffineControl(nn.Module):
    """u(Z, t_n) = a_n^T (x, y_1..y_K) + c_n: free coefficients per Euler step n, per latent
    dimension and per series (``series`` independent series batched as paths, series-major:
    row b of a batch of B belongs to series b // (B / series)), all zero at the start (q = p).
    Each step also scales its Brownian increment by sqrt(r_n), r_n = exp(log_r_n) (1 at the
    start), at the KL cost 1/2 (r_n - 1 - log r_n) of the Euler transitions: the exact
    posterior of the Euler chain moves the shared noise with variance h_n / (1 + h_n G^T L G)
    (:func:`posterior_control`), so with r the family holds it exactly, not up to the Euler
    gap; r_n -> 1 as h -> 0 (in continuous time a changed diffusion has infinite KL).

    Why this family (docs/constructs/fractional_sde.md, "The affine control"): for a linear
    drift, a constant diffusion, type II noise (Y(0) = 0) and Gaussian observations the
    augmented prior dZ = (F Z + f0) dt + G dW is linear-Gaussian, and its posterior is the
    diffusion with the same G and the drift F Z + f0 + G u*, u* = G^T grad_Z log beta_t(Z)
    with beta_t the Gaussian backward message, so u* is affine in Z (Archambeau et al.
    2007 for diffusions). The family holds the exact posterior: with the noise scale
    exactly on the Euler grid (without it, up to the Euler gap); for other drifts it is a
    Gaussian-Markov (linear-noise) approximation. The control is only
    defined at the Euler grid's points: :class:`FractionalSDE` looks the step up there.
    """

    def __init__(self, steps: int, D: int, K: int, series: int = 1):
        super().__init__()
        self.steps, self.D, self.K, self.series = int(steps), int(D), int(K), int(series)
        self.a = nn.Parameter(torch.zeros(self.steps, self.series, self.D, 1 + self.K))
        self.c = nn.Parameter(torch.zeros(self.steps, self.series, self.D))
        self.log_r = nn.Parameter(torch.zeros(self.steps, self.series, self.D))

    def plan(self, B: int, dtype) -> tuple[tuple[torch.Tensor, ...], ...]:
        """The coefficients of every step expanded to a batch of B paths, unbound once per
        solve (indexing a [P, ...] tensor per step would give each step's backward a
        full-size gradient)."""
        if B % self.series:
            raise ValueError(f"fractional_sde: an affine control of {self.series} series "
                             f"needs a batch that is a multiple of it, got {B} paths")
        r = B // self.series
        return tuple(p.to(dtype).repeat_interleave(r, 1).unbind(0)
                     for p in (self.a, self.c, self.log_r))

    def planned(self, plan, i: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """u [B, D] at the i-th Euler point for the states x [B, D], y [B, D, K]."""
        if i >= self.steps:
            raise ValueError(f"fractional_sde: the affine control has {self.steps} steps; "
                             f"the solve asked for step {i}")
        a, c = plan[0][i], plan[1][i]
        return a[..., 0] * x + (a[..., 1:] * y).sum(-1) + c

    @staticmethod
    def noise(plan, i: int, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sqrt(r) [B, D], the KL rate sum_d 1/2 (r - 1 - log r) / h [B, 1]) of step i,
        whose length is h (the solver multiplies the rate by h)."""
        lr = plan[2][i]
        return (0.5 * lr).exp(), 0.5 * (lr.exp() - 1.0 - lr).sum(-1, keepdim=True) / h


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
GRID_TOL = 0.01      # a time within 1% of a step of an Euler point is that point (grid_points)


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
        if isinstance(control, AffineControl) and control_form != "noise":
            raise ValueError("fractional_sde: the affine control outputs u itself; use it "
                             "with control_form='noise'")
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
        self._plan = self._affine_plan = None
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
        self._affine_plan = None     # built at the first step, when the batch is known

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
        if isinstance(self.control, AffineControl):
            if i is None:
                raise ValueError("fractional_sde: the affine control is defined on the Euler "
                                 "grid only; the solver asked for an off-grid time")
            return self.control.planned(self._affine(z), i, *self._split(z))
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

    def _affine(self, z):
        """The affine control's coefficients expanded to z's batch, planned once per solve
        by whichever of f, g or f_and_g_prod torchsde calls first."""
        if self._affine_plan is None:
            self._affine_plan = self.control.plan(z.shape[0], z.dtype)
        return self._affine_plan

    def _f_s(self, t, z):
        """The drift of Z, the diffusion s and the affine noise scale (:meth:`_noise_scale`)
        at (t, Z)."""
        t, i = self._step(t, z)
        x, y = self._split(z)
        b = self.drift(x, t)
        s = self._diffusion(x, t)
        u = self.u(t, z, s, i)
        dy = u.unsqueeze(-1) - self.gamma * y
        dx = b + s * (self.w * dy).sum(-1)
        dkl = 0.5 * (u ** 2).sum(-1, keepdim=True)
        scale = self._noise_scale(i, z)
        if scale is not None:
            dkl = dkl + scale[1]
        return torch.cat([dx, dy.reshape(z.shape[0], -1), dkl], -1), s, scale

    def _noise_scale(self, i: int | None, z):
        """An affine control's (sqrt(r), KL rate) at grid step i for z's batch, or None."""
        if not isinstance(self.control, AffineControl) or i is None \
                or i + 1 >= len(self._grid):
            return None
        return AffineControl.noise(self._affine(z), i, self._grid[i + 1] - self._grid[i])

    def f(self, t, z):
        return self._f_s(t, z)[0]

    def f_and_g_prod(self, t, z, v):
        """(f, g v) for torchsde's Euler step, with g v written out: X gets s wbar dW,
        every Y_k of a dimension that dimension's dW, the KL state nothing (the same
        numbers as the product with :meth:`g`, without the [B, 1 + D (K + 1), D] matrix)."""
        f, s, scale = self._f_s(t, z)
        B = z.shape[0]
        if scale is not None:   # sqrt(r) scales the shared increment of X and every Y_k
            v = v * scale[0]
        gp = torch.cat([(s * self.wbar) * v,
                        v.unsqueeze(-1).expand(B, self.D, self.K).reshape(B, -1),
                        v.new_zeros(B, 1)], -1)
        return f, gp

    def g(self, t, z):
        t, i = self._step(t, z)
        out = self._g_prior(t, z)
        scale = self._noise_scale(i, z)
        return out if scale is None else out * scale[0].unsqueeze(1)   # the columns: dW_d

    def _g_prior(self, t, z):
        """g without the noise scale at (t, Z), t already :meth:`_step`'s device time."""
        B, D, K = z.shape[0], self.D, self.K
        if self.constant_diffusion and self._g is not None and self._g.shape[0] == B:
            return self._g
        x, _ = self._split(z)
        s = self.diffusion(x, t) * self.wbar
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


def _exact(v) -> torch.Tensor:
    """A tensor as it is, a Python number in float64 (not rounded to the default dtype)."""
    return v if isinstance(v, torch.Tensor) else torch.as_tensor(v, dtype=torch.float64)


class LinearDrift:
    """The drift b(x, t) = slope * x + offset (elementwise): a field for :func:`simulate`
    that :func:`moment_elbo` can read. ``LinearDrift.fou(theta, mu)`` is -theta (x - mu)."""

    def __init__(self, slope, offset):
        self.slope, self.offset = _exact(slope), _exact(offset)

    @classmethod
    def fou(cls, theta, mu) -> LinearDrift:
        """The fractional Ornstein-Uhlenbeck drift -theta (x - mu)."""
        theta = _exact(theta)
        return cls(-theta, theta * _exact(mu))

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.slope.to(x) * x + self.offset.to(x)


def euler_steps(times: torch.Tensor, dt: float | None = None, gamma_max: float = 20.0) -> int:
    """The number of Euler steps :func:`simulate` takes over ``times`` (the size of an
    :class:`AffineControl` for that solve; ``dt`` None: :func:`default_dt`)."""
    times = torch.as_tensor(times).detach().cpu()
    dt = default_dt(times, gamma_max) if dt is None else float(dt)
    return len(euler_points(times, dt)) - 1


def _linear_parts(drift, diffusion, dtype, device):
    """(slope, offset, sigma) of a linear drift and a constant scalar diffusion, or a
    ValueError naming what the moment ELBO cannot take."""
    if isinstance(drift, LinearDrift):
        slope, offset = drift.slope, drift.offset
    elif isinstance(drift, (int, float)) or (isinstance(drift, torch.Tensor)
                                             and drift.numel() == 1):
        slope, offset = torch.zeros(()), torch.as_tensor(drift)
    else:
        raise ValueError("moment_elbo: the closed-form ELBO needs a linear drift (a number or "
                         "LinearDrift(slope, offset)); for other drifts use the Monte Carlo "
                         "ELBO of simulate(..., control=AffineControl(...))")
    if callable(diffusion) or not (isinstance(diffusion, (int, float)) or (
            isinstance(diffusion, torch.Tensor) and diffusion.numel() == 1)):
        raise ValueError("moment_elbo: the closed-form ELBO needs a constant scalar diffusion; "
                         "for a state- or time-dependent one use the Monte Carlo ELBO")
    return tuple(torch.as_tensor(v, dtype=dtype, device=device).reshape(())
                 for v in (slope, offset, diffusion))


def _linear_system(times, y, drift, diffusion, hurst, K, kind, gamma_max, gamma_min, dt,
                   dtype, device, who: str) -> dict:
    """What the closed forms share: the Euler grid of :func:`simulate` (step lengths h [P],
    {grid point: output index} of the observations), the observations [T, S] (NaN ->
    0, with the mask ``seen``) and the augmented prior dZ = (F Z + f0) dt + G dW."""
    slope, offset, sigma = _linear_parts(drift, diffusion, dtype, device)
    times = torch.as_tensor(times, dtype=dtype, device=device)
    ys = torch.as_tensor(y, dtype=dtype, device=device).reshape(len(times), -1)
    host = times.detach().cpu()
    dt = default_dt(host, gamma_max) if dt is None else float(dt)
    check_stability(gamma_max, dt)
    # each output time's grid point: the chain is observed there (grid_points)
    pts, at, off = grid_points(host, dt)
    if off:
        raise ValueError(f"{who}: every time must be an Euler grid point, and {off[0]}")
    g, w, eps = weights(hurst, K, kind, float(host[-1] - host[0]), gamma_max, gamma_min,
                        dtype, device)
    Kk = len(g)
    zero = dict(dtype=dtype, device=device)
    F = torch.cat([torch.cat([slope.reshape(1, 1), -(sigma * w * g).reshape(1, Kk)], 1),
                   torch.cat([torch.zeros(Kk, 1, **zero), -torch.diag(g)], 1)], 0)
    seen = ~torch.isnan(ys)
    P0 = torch.zeros(1 + Kk, 1 + Kk, **zero)
    if kind == 1:
        P0 = torch.block_diag(torch.zeros(1, 1, **zero), 1.0 / (g[:, None] + g[None, :]))
    return {"h": (pts[1:] - pts[:-1]).to(**zero), "obs_at": {int(j): i for i, j in
                                                             enumerate(at.tolist())},
            "ys": torch.where(seen, ys, torch.zeros_like(ys)), "seen": seen, "F": F,
            "f0": torch.cat([offset.reshape(1), torch.zeros(Kk, **zero)]),
            "G": torch.cat([(sigma * w.sum()).reshape(1), torch.ones(Kk, **zero)]),
            "P0": P0, "eye": torch.eye(1 + Kk, **zero), "eps": eps}


def moment_elbo(times, y, obs_sd, drift, diffusion, hurst, control: AffineControl,
                x0_loc, x0_scale, x0_prior: torch.distributions.Normal, *, K: int = 5,
                kind: int = 2, gamma_max: float = 20.0, gamma_min: float | None = None,
                dt: float | None = None, draw: bool = False) -> dict[str, torch.Tensor]:
    """The ELBO of METHODS.md s2 under an affine control, in closed form (no sampling).

    Model: one latent dimension, x0 ~ ``x0_prior``, dX = b(X) dt + sigma dB_hat^H with
    b = slope X + offset (:class:`LinearDrift`) and a constant sigma, y_i ~ N(X(t_i),
    obs_sd^2) at the ``times`` (``y`` [T] or [T, S]: S series, NaN where missing), solved
    on the same Euler grid as :func:`simulate`. With u_n = a_n^T Z + c_n the Euler chain
    Z' = A_n Z + b_n + sqrt(r_n) G dW, A_n = I + (F + G a_n^T) h_n, b_n = (f0 + G c_n) h_n,
    stays Gaussian under Q, so its mean and covariance propagate exactly:
    m' = A_n m + b_n, P' = A_n P A_n^T + r_n G G^T h_n (F, f0, G the augmented prior's:
    METHODS.md s2). Then, per series,

        E_Q log p(y | X) = sum_i log N(y_i; m_x, obs_sd^2) - P_xx / (2 obs_sd^2),
        path KL = sum_n 1/2 ((a_n^T m + c_n)^2 + a_n^T P a_n) h_n + 1/2 (r_n - 1 - log r_n),

    and ELBO = E log p(y | X) - path KL - KL(q(x0) || p(x0)), q(x0) = N(x0_loc, x0_scale^2)
    per series: the expectation of the Monte Carlo ELBO of :func:`simulate` with the same
    control (a Rao-Blackwellised estimator with no variance), differentiable in every
    argument. Type II starts Y(0) = 0; type I at its stationary law, not controlled.
    Refuses (ValueError) a drift that is not linear or a diffusion that is not a constant.
    Returns {"elbo", "loglik", "path_kl", "x0_kl"}, each [S], and "eps" (the MA-fBM's
    relative error at H). ``draw``: also "path" [T, S], one posterior path per series
    drawn from the same Euler chain, x0 ~ q(x0), Z' = A_n Z + b_n + sqrt(r_n h_n) G xi
    (the chain :func:`simulate` solves under this control, without the autograd graph).
    """
    if not isinstance(control, AffineControl) or control.D != 1:
        raise ValueError("moment_elbo: the control must be an AffineControl of one latent "
                         "dimension")
    # the control's coefficients fix dtype and device: a Python-number x0_loc must not
    # turn the closed form float32 (torch's default) under a float64 control
    dtype, device = control.a.dtype, control.a.device
    x0_loc = torch.as_tensor(x0_loc, dtype=dtype, device=device)
    sy = _linear_system(times, y, drift, diffusion, hurst, K, kind, gamma_max, gamma_min, dt,
                        dtype, device, "moment_elbo")
    h, obs_at, ys, seen, F, f0, G = (sy[k] for k in ("h", "obs_at", "ys", "seen", "F", "f0",
                                                     "G"))
    S, Kk = ys.shape[1], len(G) - 1
    if control.series != S or control.steps != len(h):
        raise ValueError(f"moment_elbo: the control has {control.series} series and "
                         f"{control.steps} steps; the data {S} series, the grid {len(h)} steps")
    GG, eye = G[:, None] * G[None, :], sy["eye"]
    scale = torch.as_tensor(x0_scale, dtype=dtype, device=device).expand(S)
    m = torch.cat([x0_loc.expand(S).reshape(S, 1),
                   torch.zeros(S, Kk, dtype=dtype, device=device)], 1)
    P = sy["P0"] + torch.diag_embed(torch.cat([scale.reshape(S, 1) ** 2,
                                               scale.new_zeros(S, Kk)], 1))
    var = torch.as_tensor(obs_sd, dtype=dtype, device=device) ** 2
    a_all, c_all = control.a[:, :, 0, :], control.c[:, :, 0]      # [N, S, 1 + K], [N, S]
    lr_all = control.log_r[:, :, 0]                                # [N, S]
    hr = h[:, None] * lr_all.exp()                                 # each step's noise variance
    # what does not depend on the recursion, for every step in one operation (the loop
    # then holds three products per step, which is what its cost and backward scale with);
    # unbound once, so the backward of each step's slice is not a full-size gradient
    A_all = (eye + (F + G[:, None] * a_all[..., None, :]) * h[:, None, None, None]).unbind(0)
    b_all = ((f0 + G * c_all[..., None]) * h[:, None, None]).unbind(0)
    Q_all = (GG * hr[..., None, None]).unbind(0)
    ms, Ps = [m], [P]
    for n in range(len(h)):
        m = (A_all[n] @ m[..., None])[..., 0] + b_all[n]
        P = A_all[n] @ P @ A_all[n].transpose(1, 2) + Q_all[n]
        ms.append(m)
        Ps.append(P)
    M, PP = torch.stack(ms), torch.stack(Ps)                       # [N + 1, S, ...]
    # step n's KL is at its start state (m_n, P_n): E u^2 = (a^T m + c)^2 + a^T P a
    am = (a_all * M[:-1]).sum(-1) + c_all
    aPa = (a_all[..., None, :] @ PP[:-1] @ a_all[..., :, None])[..., 0, 0]
    kl = (0.5 * (am ** 2 + aPa) * h[:, None] + 0.5 * (lr_all.exp() - 1.0 - lr_all)).sum(0)
    js = torch.tensor(list(obs_at), device=device)                 # grid points observed
    out_i = torch.tensor(list(obs_at.values()), device=device)     # their output times
    term = -0.5 * (torch.log(2 * math.pi * var)
                   + ((ys[out_i] - M[js, :, 0]) ** 2 + PP[js, :, 0, 0]) / var)
    ll = torch.where(seen[out_i], term, torch.zeros_like(term)).sum(0)
    path = None
    if draw:
        with torch.no_grad():
            zs = _draw(M[0].detach(), PP[0].detach())   # x0 ~ q(x0); Y(0): 0 or stationary
            xi = torch.randn(len(h), S, 1, dtype=dtype, device=device) * hr.sqrt()[..., None]
            xs = [zs[:, 0]]
            for n in range(len(h)):
                zs = (A_all[n] @ zs[..., None])[..., 0] + b_all[n] + xi[n] * G
                xs.append(zs[:, 0])
            path = torch.empty(len(times), S, dtype=dtype, device=device)
            path[out_i] = torch.stack(xs)[js]
    q0 = torch.distributions.Normal(x0_loc.expand(S), scale)
    p0 = torch.distributions.Normal(x0_prior.mean.to(x0_loc), x0_prior.stddev.to(x0_loc))
    kl0 = torch.distributions.kl_divergence(q0, p0)
    out = {"elbo": ll - kl - kl0, "loglik": ll, "path_kl": kl, "x0_kl": kl0, "eps": sy["eps"]}
    if draw:
        out["path"] = path
    return out


@torch.no_grad()
def _draw(m: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """One draw of N(m_s, P_s) per row s (P may be singular: Y(0) = 0 for type II), by a
    symmetric square root (eigh), which needs no positive definiteness."""
    val, vec = torch.linalg.eigh(P)
    root = vec * val.clamp(min=0).sqrt()[:, None, :]
    return m + (root @ torch.randn_like(m)[..., None])[..., 0]


@torch.no_grad()
def posterior_control(times, y, obs_sd, drift, diffusion, hurst,
                      x0_prior: torch.distributions.Normal, *, K: int = 5,
                      gamma_max: float = 20.0, gamma_min: float | None = None,
                      dt: float | None = None, noise_scale: bool = True,
                      dtype=torch.float64, device=None
                      ) -> tuple[AffineControl, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The exact posterior's control, projected on the affine family: a closed-form start
    for maximising :func:`moment_elbo` (type II, same model and arguments).

    A backward information filter on the Euler chain Z' = A0 Z + b0 + G xi, xi ~ N(0, h)
    (A0 = I + F h, b0 = f0 h) carries the message beta_n(z) = exp(-1/2 z^T L_n z + e_n^T z)
    of the observations after t_n: with pi = 1/h + G^T L G,
    L~ = L - L G G^T L / pi, e~ = e - L G G^T e / pi,
    L_n = A0^T L~ A0, e_n = A0^T (e~ - L~ b0), and an observation y at t_n adds
    e_0 e_0^T / obs_sd^2 to L_n and e_0 y / obs_sd^2 to e_n. The exact posterior
    transition moves xi to mean G^T (e - L mu) / pi at mu = A0 z + b0 with variance 1/pi;
    the family takes the mean, u = xi_mean / h: a_n = -A0^T L G / (pi h),
    c_n = G^T (e - L b0) / (pi h) (u* = G^T grad log beta as h -> 0), and with
    ``noise_scale`` the variance, r_n = 1 / (h pi). q(x0) is p(x0) beta_0 restricted to
    Y(0) = 0. Every transition is then the exact posterior's, so the ELBO is log p. With
    ``noise_scale=False`` (r = 1, the Girsanov family) it is below log p by the Euler gap
    sum_n 1/2 (h pi_n - 1 - log(h pi_n)) (O(h) in total, but large where h G^T L G is not
    small: steps before an observation with obs_sd^2 below the step's prior variance
    sigma^2 wbar^2 h); the means match, so that is the r = 1 family's optimum.
    Returns (control, x0_loc [S], x0_scale [S], gap [S]: the r = 1 Euler gap)."""
    sy = _linear_system(times, y, drift, diffusion, hurst, K, 2, gamma_max, gamma_min, dt,
                        dtype, device, "posterior_control")
    h, obs_at, ys, seen, F, f0, G, eye = (sy[k] for k in ("h", "obs_at", "ys", "seen", "F",
                                                          "f0", "G", "eye"))
    S, n = ys.shape[1], len(G)
    var = float(obs_sd) ** 2
    L = torch.zeros(S, n, n, dtype=dtype, device=device)
    e = torch.zeros(S, n, dtype=dtype, device=device)

    # an observation at grid point j adds e_0 e_0^T / obs_sd^2 to L and e_0 y / obs_sd^2 to e
    E00 = torch.zeros(n, n, dtype=dtype, device=device)
    E00[0, 0] = 1.0
    e0 = eye[0]

    def observe(j, L, e):
        i = obs_at.get(j)
        if i is None:
            return L, e
        return L + (seen[i] / var)[:, None, None] * E00, e + (ys[i] / var)[:, None] * e0

    A0s, b0s = eye + F * h[:, None, None], f0 * h[:, None]         # every step's, at once
    LGs, pis, eGs = [], [], []
    L, e = observe(len(h), L, e)
    for j in range(len(h) - 1, -1, -1):
        A0, b0 = A0s[j], b0s[j]
        LG = (L * G).sum(-1)                                        # L G [S, n]
        pi = 1.0 / h[j] + (LG * G).sum(-1)                          # [S]
        eG = (e * G).sum(-1)
        LGs.append(LG)
        pis.append(pi)
        eGs.append(eG)
        Lt = L - LG[:, :, None] * LG[:, None, :] / pi[:, None, None]
        et = e - LG * (eG / pi)[:, None]
        L = A0.T @ Lt @ A0
        e = ((et - (Lt @ b0)) @ A0)
        L, e = observe(j, L, e)
    # the per-step coefficients from what the backward pass kept, in time order
    LG, pi, eG = (torch.stack(v[::-1]) for v in (LGs, pis, eGs))   # [N, S, n], [N, S]
    hpi = h[:, None] * pi
    ctrl = AffineControl(len(h), 1, n - 1, S).to(dtype=dtype, device=device)
    ctrl.a.data[:, :, 0] = -(LG @ A0s) / hpi[..., None]
    ctrl.c.data[:, :, 0] = (eG - (LG * b0s[:, None, :]).sum(-1)) / hpi
    if noise_scale:
        ctrl.log_r.data[:, :, 0] = -torch.log(hpi)
    gap = (0.5 * (hpi - 1.0 - torch.log(hpi))).sum(0)
    m0 = x0_prior.mean.to(device=device, dtype=dtype).expand(S)
    p0 = 1.0 / x0_prior.variance.to(device=device, dtype=dtype).expand(S)
    prec = p0 + L[:, 0, 0]
    return ctrl, (m0 * p0 + e[:, 0]) / prec, prec.rsqrt(), gap


# ---- the closed-form (Rao-Blackwellised) ELBO inside a model -----------------------------
class NotAffine(Exception):
    """Raised by the abstract evaluation of :func:`affine_parts`: an operation that does not
    keep the value affine in the state, or any use of the time."""


def _plain(v) -> bool:
    """A value that depends on neither the state nor the time: a number or a tensor."""
    return isinstance(v, torch.Tensor) or (isinstance(v, (int, float))
                                           and not isinstance(v, bool))


class _TimeArg:
    """The time argument of a field under :func:`affine_parts`: any use of it refuses (the
    closed form needs a time-invariant drift)."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        raise NotAffine("the field uses the time")

    def __getattr__(self, item):
        if item.startswith("__"):      # a protocol lookup (hasattr): not a use of t
            raise AttributeError(item)
        raise NotAffine("the field uses the time")

    def _refuse(self, *args):
        raise NotAffine("the field uses the time")

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _refuse
    __truediv__ = __rtruediv__ = __pow__ = __rpow__ = __neg__ = __getitem__ = _refuse
    __float__ = __bool__ = __index__ = __len__ = __iter__ = _refuse


class _AffineState:
    """The state x as the elementwise affine form ``slope * x + offset`` (slope, offset:
    numbers or tensors that do not depend on x).

    Calling a field's function literal on it applies each operation of the body to the
    form: a sum or difference with a plain value or another form, a product with a plain
    value, a quotient by one, a negation keep it affine and update (slope, offset); every
    other operation (a product of two forms, a quotient by one, a power, indexing, a
    reduction, any torch function such as exp or sin, a comparison) raises
    :class:`NotAffine`. A form that comes out is therefore a proof that the body is affine
    in x with that slope and offset (tensors, differentiable in the parameters the body
    reads): an exact test, with no evaluation at sample points."""

    def __init__(self, slope, offset):
        self.slope, self.offset = slope, offset

    def _op(self, op: str, other, reflected: bool = False) -> _AffineState:
        if isinstance(other, _AffineState) and op in ("add", "sub"):
            sign = -1.0 if op == "sub" else 1.0
            if reflected:
                return _AffineState(other.slope - self.slope, other.offset - self.offset)
            return _AffineState(self.slope + sign * other.slope,
                                self.offset + sign * other.offset)
        if not _plain(other):
            raise NotAffine(f"{op} of the state with {type(other).__name__}")
        if op == "add":
            return _AffineState(self.slope, self.offset + other)
        if op == "sub":
            return (_AffineState(-self.slope, other - self.offset) if reflected
                    else _AffineState(self.slope, self.offset - other))
        if op == "mul":
            return _AffineState(self.slope * other, self.offset * other)
        if op == "div" and not reflected:
            return _AffineState(self.slope / other, self.offset / other)
        raise NotAffine(f"{op} of the state")

    def __add__(self, o):
        return self._op("add", o)

    def __radd__(self, o):
        return self._op("add", o, True)

    def __sub__(self, o):
        return self._op("sub", o)

    def __rsub__(self, o):
        return self._op("sub", o, True)

    def __mul__(self, o):
        return self._op("mul", o)

    def __rmul__(self, o):
        return self._op("mul", o, True)

    def __truediv__(self, o):
        return self._op("div", o)

    def __rtruediv__(self, o):
        return self._op("div", o, True)

    def __neg__(self):
        return _AffineState(-self.slope, -self.offset)

    def __pos__(self):
        return self

    def _refuse(self, *args):
        raise NotAffine("a nonlinear operation on the state")

    __pow__ = __rpow__ = __getitem__ = __abs__ = __matmul__ = __rmatmul__ = _refuse
    __float__ = __bool__ = __index__ = __len__ = __iter__ = _refuse

    def __getattr__(self, item):
        if item.startswith("__"):      # a protocol lookup (hasattr): not an operation
            raise AttributeError(item)
        raise NotAffine(f"the state's .{item}")

    # torch functions and a tensor's own operators (theta * x is Tensor.mul(theta, x))
    _TORCH = {"add": "add", "__add__": "add", "__radd__": "add", "sub": "sub",
              "subtract": "sub", "__sub__": "sub", "rsub": "rsub", "__rsub__": "rsub",
              "mul": "mul", "multiply": "mul", "__mul__": "mul", "__rmul__": "mul",
              "div": "div", "divide": "div", "true_divide": "div", "__truediv__": "div",
              "__rtruediv__": "rdiv", "neg": "neg", "negative": "neg", "__neg__": "neg",
              "positive": "pos", "__pos__": "pos"}

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        op = cls._TORCH.get(getattr(func, "__name__", ""))
        if op is None or kwargs:
            raise NotAffine(f"{getattr(func, '__name__', func)} of the state")
        if op in ("neg", "pos"):
            return -args[0] if op == "neg" else args[0]
        a, b = args
        if op == "rsub":            # rsub(a, b) = b - a
            op, a, b = "sub", b, a
        if op == "rdiv":            # a.__rtruediv__(b) = b / a
            op, a, b = "div", b, a
        if isinstance(a, _AffineState):
            return a._op(op, b)
        return b._op(op, a, reflected=True)


def affine_parts(spec) -> tuple[torch.Tensor | None, torch.Tensor] | None:
    """(slope, offset) when the drift/diffusion ``spec`` is provably the time-invariant
    elementwise affine field b(x, t) = slope * x + offset, slope None where it does not
    depend on x at all (a constant); None otherwise (a network; a literal that is not
    affine, or uses t, or fails to evaluate on the abstract state).

    A number, tensor or ``param`` is the constant itself. A function literal (a Python
    callable f(x, t)) is evaluated once on an :class:`_AffineState` x and a :class:`_TimeArg`
    t, so the answer is exact: yes only for a body built from sums, differences,
    products and quotients of x with values that do not depend on (x, t).
    """
    if _is_network(spec):
        return None
    if not callable(spec):
        return None, torch.as_tensor(spec)
    try:
        out = spec(_AffineState(1.0, 0.0), _TimeArg())
    except Exception:  # noqa: BLE001  any failure of the abstract evaluation: not proven affine
        return None
    if isinstance(out, _AffineState):
        return torch.as_tensor(out.slope), torch.as_tensor(out.offset)
    return (None, torch.as_tensor(out)) if _plain(out) else None


class Observation:
    """The one statement that reads a path, ``y ~ Normal(path[rows, col], sd)``, as the
    compiler found it (``ppl.constructs.fractional_sde``, where the conditions are checked):
    its observed value (None when left out), its sd, the rows (None: all times), the
    column (None: all) and the site's name. Generated code passes it as
    ``observation=rt.fractional_sde.Observation(...)`` to a path fitted in closed form."""

    def __init__(self, value, sd, site: str, rows=None, col: int | None = None):
        self.value, self.sd, self.site, self.rows, self.col = value, sd, site, rows, col

    def unobserved(self) -> bool:
        """Whether the path is not conditioned on the data at this call: the value is left
        out (optional data), the site is held out of inference (its value a prior draw,
        its density masked: ``ppl.infer.generated.held_out``) or observed sites are being
        simulated (``ppl.infer.draws.simulate_observed``, a prior predictive). The flags
        are the handlers' own, read here because the closed form reads the value directly
        rather than through the observed site."""
        from ..infer.draws import simulating
        from ..infer.generated import held_out_sites
        if simulating() or self.value is None:
            return True
        held = held_out_sites()
        return bool(held) and self.site in held

    def values(self, T: int, D: int, dtype, device) -> tuple:
        """(ys [T, D] with NaN where unobserved, sd (a one-element tensor), rows [n],
        col or None, obs [n, D or 1]), or a ValueError naming what does not fit the
        closed form. An unobserved path (:meth:`unobserved`) has no rows and ys all NaN:
        the closed forms then give the prior."""
        if self.unobserved():
            ys = torch.full((T, D), float("nan"), dtype=dtype, device=device)
            none = torch.zeros(0, dtype=torch.long, device=device)
            return (ys, torch.as_tensor(self.sd).to(device=device).reshape(()), none,
                    self.col, ys.new_zeros(0, D if self.col is None else 1))
        rows = (torch.arange(T, device=device) if self.rows is None
                else torch.as_tensor(self.rows, device=device).long().reshape(-1))
        if len(rows) and (int(rows.min()) < -T or int(rows.max()) >= T):
            raise ValueError("the observation's time index is out of range")
        rows = rows % T
        if len(torch.unique(rows)) != len(rows):
            raise ValueError("a time point is observed twice (the closed form takes one "
                             "observation per time)")
        if self.col is not None and not -D <= self.col < D:
            raise ValueError(f"the observation reads column {self.col} of a path with {D}")
        scale = torch.as_tensor(self.sd)
        if scale.numel() != 1:
            raise ValueError("the observation's sd must be one number (a scalar)")
        width = D if self.col is None else 1
        obs = torch.as_tensor(self.value).to(dtype=dtype, device=device)
        if obs.numel() != len(rows) * width:
            raise ValueError(f"the observed value has {obs.numel()} numbers for "
                             f"{len(rows)} x {width} observed path values")
        obs = obs.reshape(len(rows), width)
        ys = torch.full((T, D), float("nan"), dtype=dtype, device=device)
        if self.col is None:
            ys[rows] = obs
        else:
            ys[rows, self.col % D] = obs[:, 0]
        return ys, scale.to(device=device).reshape(()), rows, self.col, obs


def _closed_form_parts(observation, times, drift, diffusion, x0, kind, D, dt, gamma_max):
    """What the closed form needs, or the reason it does not apply: {slope, offset, sigma,
    x0 prior, the observation's values} for a time-invariant affine drift with one slope
    and offset, a constant scalar diffusion, x0 ~ Normal and one Gaussian observation of
    the path (:func:`affine_parts`, :class:`Observation`)."""
    b = affine_parts(drift)
    if b is None:
        return "the drift is not (provably) affine in the state and free of the time"
    s = affine_parts(diffusion)
    if s is None or s[0] is not None:
        return "the diffusion is not a constant"
    slope = torch.zeros(()) if b[0] is None else b[0]
    if slope.numel() != 1 or b[1].numel() != 1 or s[1].numel() != 1:
        return "the drift's slope and offset and the diffusion must be single numbers"
    if not isinstance(x0, torch.distributions.Normal) or x0.mean.numel() != 1:
        return "x0 must be a Normal distribution with one mean and sd"
    if observation is None:
        return ("no observation was given (the compiler passes observation="
                "rt.fractional_sde.Observation(...) for y ~ Normal(path[rows, c], sd))")
    dt, why = closed_form_grid(times, dt, gamma_max)
    if dt is None:
        return (f"the times are not all points of the Euler grid: {why} (give dt so that "
                f"every gap is a whole number of steps, to within 1% of a step)")
    f64 = dict(dtype=torch.float64, device=times.device)
    try:
        obs = observation.values(len(times), D, **f64)
    except ValueError as e:
        return str(e)
    return {"drift": LinearDrift(slope.reshape(()).to(**f64), b[1].reshape(()).to(**f64)),
            "sigma": s[1].reshape(()).to(**f64), "prior": torch.distributions.Normal(
                x0.mean.reshape(()).to(**f64), x0.stddev.reshape(()).to(**f64)),
            "obs": obs, "dt": dt}


def closed_form_dt(times: torch.Tensor, dt: float | None, gamma_max: float) -> float | None:
    """The Euler step of the closed form (:func:`closed_form_grid`), or None when some
    time is not a point of its grid (the closed form observes the chain at its steps)."""
    return closed_form_grid(times, dt, gamma_max)[0]


def closed_form_grid(times: torch.Tensor, dt: float | None, gamma_max: float
                     ) -> tuple[float | None, str | None]:
    """(the closed form's Euler step, None) or (None, why no step fits the times).

    ``dt`` given: it, when every time is a point of its grid (:func:`grid_points`). ``dt``
    None: the first of these gaps on whose grid every time lies, divided into the fewest
    equal steps with gamma_max * dt <= 0.25: the uniform grid's gap span / (T - 1); the
    gap of the lattice of whole multiples of the smallest gap (span / n, n the last time's
    multiple: times with some points left out); the smallest gap itself. Times written
    to fewer digits than the grid's (a CSV's t = linspace(0, 1, 60) to 5 decimals) are
    the grid they round, which their smallest gap is not (its error adds up along the
    series). The reason names the worst time of the gap on whose grid most times lie."""
    host = times.detach().cpu().to(torch.float64)
    if dt is not None:
        steps = [float(dt)]
    else:
        span, small = float(host[-1] - host[0]), float((host[1:] - host[:-1]).min())
        mult = float(torch.round((host[-1] - host[0]) / small))
        steps = []
        for gap in (span / (len(host) - 1), span / max(mult, 1.0), small):
            step = gap / math.ceil(gap * float(gamma_max) / 0.25 - 1e-9)
            if all(abs(step - s) > 1e-12 * step for s in steps):
                steps.append(step)
    best = None
    for step in steps:
        _, _, off = grid_points(host, step)
        if not off:
            return step, None
        if best is None or len(off) < len(best):
            best = off
    return None, best[0]


def grid_points(times: torch.Tensor, dt: float) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Each time's point on the Euler grid of step ``dt``: (the points [P] of
    :func:`euler_points`, the grid the solver visits, in float64; at [T], the index of
    each time's nearest point; the times that are not grid points, each a sentence,
    worst first: empty when all are).

    A time is a grid point when within ``GRID_TOL`` (1%) of a step of its nearest point and
    no earlier time has that point. The closed forms (:func:`moment_elbo`,
    :func:`posterior_control`, a path fitted in closed form) then observe the chain at the
    point, which moves the time by at most dt / 100. Why 1%: the Euler chain is already
    off the SDE by O(dt) (weak order 1), an error made of the same rates (gamma_max,
    the slope, the diffusion) as the change of Z's law over a time shift; a shift of
    dt / 100 changes that law by about a hundredth of one step's change, well inside
    the error the grid already carries. Times rounded to fewer digits than the grid's fit:
    t = linspace(0, 1, 60) to 5 decimals is at most 4.9e-6 off, 6e-4 of the default
    step 0.0085 (gamma_max 20); a time 0.3 of a gap off is 0.4 of that step from its
    nearest point and does not fit."""
    pts = torch.stack(euler_points(times, float(dt))).to(torch.float64)
    t64 = times.to(torch.float64)
    at = torch.searchsorted(pts, t64).clamp(1, len(pts) - 1)
    at = torch.where((pts[at - 1] - t64).abs() <= (pts[at] - t64).abs(), at - 1, at)
    dev = (pts[at] - t64).abs() / float(dt)
    off = []
    for i in torch.argsort(dev, descending=True).tolist():
        if float(dev[i]) <= GRID_TOL:
            break
        off.append(f"t[{i}] = {float(t64[i]):.6g} is {float(dev[i]):.2g} of a step "
                   f"(dt = {float(dt):.6g}) from the nearest Euler grid point")
    same = (at[1:] == at[:-1]).nonzero().reshape(-1).tolist()
    off += [f"t[{i}] = {float(t64[i]):.6g} and t[{i + 1}] = {float(t64[i + 1]):.6g} fall on "
            f"one Euler grid point (a gap shorter than a step, dt = {float(dt):.6g})"
            for i in same]
    return pts, at, off


def _to_dims(ctrl: AffineControl) -> AffineControl:
    """An affine control of S series of one dimension as one of S dimensions (one series):
    the same coefficients, for :func:`simulate` on a [1, S] state."""
    out = AffineControl(ctrl.steps, ctrl.series, ctrl.K, 1).to(ctrl.a)
    with torch.no_grad():
        out.a.copy_(ctrl.a.transpose(1, 2))
        out.c.copy_(ctrl.c.transpose(1, 2))
        out.log_r.copy_(ctrl.log_r.transpose(1, 2))
    return out


def _fit_closed_form(name, parts, times, H, K, kind, gamma_max, gamma_min, dt, control,
                     elbo, D, noise):
    """The path and the ELBO terms of ``control=affine|optimal`` under ``elbo=moments|mc``
    for a linear-Gaussian model (docs/constructs/fractional_sde.md, "svi and the closed
    form"). Computed in float64; returns the path [T, D] in the model's dtype."""
    f64 = dict(dtype=torch.float64, device=times.device)
    t64 = times.to(**f64)
    ys, scale, rows, col, obs = parts["obs"]
    drift, sigma, prior = parts["drift"], parts["sigma"], parts["prior"]
    H64 = H.to(**f64)
    dt = parts["dt"]
    kw = dict(K=K, gamma_max=float(gamma_max), dt=dt,
              gamma_min=None if gamma_min is None else float(gamma_min))
    if control == "optimal":
        # the ELBO's maximiser over (control, q(x0)) at the current parameters, in closed
        # form; the parameters' gradient at it is d log p (envelope theorem)
        ctrl, loc, sd, _ = posterior_control(
            t64, ys, scale.detach(), LinearDrift(drift.slope.detach(), drift.offset.detach()),
            sigma.detach(), H64.detach(), prior, **kw, **f64)
    else:
        # in float64, on the grid of the float64 times: moment_elbo computes in the
        # control's dtype, and float32 times can end on a sliver step fewer or more than
        # the solve's (linspace(0, 1, 60), dt = 1/118: 118 steps in float32, 119 in float64)
        ctrl = pyro.module(f"{name}_control", network(
            f"{name}_control", AffineControl, euler_steps(t64, dt, float(gamma_max)), 1, K,
            D).to(**f64))
        loc, sd = _x0_params(name, prior, D, torch.float64, times.device)
    if elbo == "moments":
        out = moment_elbo(t64, ys, scale.to(**f64), drift, sigma, H64, ctrl.to(**f64)
                          if control == "optimal" else ctrl, loc, sd, prior, kind=kind,
                          draw=True, **kw)
        path = out["path"]                                         # [T, D]
        if len(rows):          # else unobserved: the statement adds no data density
            sel = path[rows] if col is None else path[rows][:, [col]]
            # the observation statement adds log N(obs; path, scale) for this path; the
            # closed form replaces it by its expectation under Q (a Rao-Blackwellisation)
            stmt = torch.distributions.Normal(sel, scale.to(**f64)).log_prob(obs).sum()
            pyro.factor(f"{name}_obs", (out["loglik"].sum() - stmt).to(times.dtype))
        kl, eps = out["path_kl"].sum() + out["x0_kl"].sum(), out["eps"]
    else:
        q0 = torch.distributions.Normal(loc, sd)
        x = q0.rsample().reshape(1, D)
        # the times moved onto their grid points, where moment_elbo observes the chain:
        # the solver then outputs the chain there, not interpolated between two steps
        pts, at, _ = grid_points(t64.detach().cpu(), dt)
        paths, kl, eps = simulate(pts[at].to(t64), x, drift, sigma, H64, kind=kind,
                                  control=_to_dims(ctrl) if control == "optimal" else ctrl,
                                  noise=noise, **kw)
        kl = kl.sum() + torch.distributions.kl_divergence(q0, prior).sum()
        path = paths[:, 0, :]
    pyro.factor(f"{name}_kl", -kl.to(times.dtype))
    pyro.deterministic(f"{name}_eps", eps.detach().to(times.dtype))
    return pyro.deterministic(name, path.to(times.dtype))



def _x0_params(name: str, x0: torch.distributions.Distribution, D: int, dtype, device):
    """q(x0)'s ``pyro.param``s ``<name>_x0_loc``, ``<name>_x0_scale`` [D], started at the
    prior's moments (0 and 1 where it has none)."""
    try:
        m0 = x0.mean.to(dtype).expand(D).clone()
        s0 = x0.stddev.to(dtype).expand(D).clone()
    except (NotImplementedError, RuntimeError):
        m0, s0 = torch.zeros(D, dtype=dtype), torch.ones(D, dtype=dtype)
    m0 = torch.where(torch.isfinite(m0), m0, torch.zeros_like(m0))
    s0 = torch.where(torch.isfinite(s0) & (s0 > 0), s0, torch.ones_like(s0))
    loc = pyro.param(f"{name}_x0_loc", m0.to(device))
    scale = pyro.param(f"{name}_x0_scale", s0.to(device), constraint=constraints.positive)
    return loc, scale

def _x0_posterior(name: str, x0, D: int, dtype, device):
    """x0 and KL(q(x0) || p(x0)): a distribution gets q = Normal(loc, scale) (pyro.params,
    started at the prior's moments), sampled by reparameterisation; a number is fixed."""
    if isinstance(x0, torch.distributions.Distribution):
        loc, scale = _x0_params(name, x0, D, dtype, device)
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
                   data_index=None, noise: str = "general", control: str = "noise",
                   elbo: str | None = None, observation: Observation | None = None):
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
    ``"drift"`` (Delta, the change of X's drift; u = Delta / (sigma wbar(H))); or
    ``"affine"``: no network, the per-step affine control u_n = a_n^T Z + c_n with a
    per-step noise scale (:class:`AffineControl`, one set of coefficients per Euler step,
    zero at the start), which holds the exact posterior of a linear model; ``hidden``,
    ``n_freq`` and ``data`` are then unused; or ``"optimal"``: that family set at every
    call to the ELBO's exact maximiser at the current drift, diffusion and H, with q(x0)
    (:func:`posterior_control`; linear-Gaussian models only).
    ``elbo``: ``"moments"``, the closed-form expectation of the Monte Carlo ELBO
    (:func:`moment_elbo`, a Rao-Blackwellisation: the observation statement's log density
    at the drawn path is replaced by its expectation under Q through the factor
    ``name + "_obs"``), for ``control=affine|optimal`` on a linear-Gaussian model
    (:func:`affine_parts`; ``observation``, an :class:`Observation` the compiler passes);
    ``"mc"``, the Monte Carlo ELBO of one torchsde path; None: ``"moments"`` under
    ``control=optimal``, else ``"mc"`` (the closed form is opt-in: its parameters have
    other shapes than the Monte Carlo route's, so a fit must not switch routes with what
    the detection finds).
    Where the observation's value is left out, held out or simulated (a prior predictive)
    the closed form's path is unobserved (:meth:`Observation.unobserved`).
    """
    kind, K, D = int(kind), int(K), int(dim)
    raw = (drift, diffusion)
    drift, diffusion = (per_state(f, D) if callable(f) and not _is_network(f)
                        else f for f in (drift, diffusion))
    if elbo not in (None, "mc", "moments"):
        raise ArgumentError(f"fractional_sde: elbo must be mc or moments, got {elbo!r}",
                            argument="elbo")
    if elbo == "moments" and control not in ("affine", "optimal"):
        raise ArgumentError("fractional_sde: elbo=moments is the closed form of an affine "
                            "control; use control=affine or control=optimal",
                            argument="elbo")
    if kind not in (1, 2):
        raise ArgumentError(f"fractional_sde: kind must be 1 or 2, got {kind}", argument="kind")
    times = torch.as_tensor(times, dtype=torch.get_default_dtype())
    if times.dim() != 1 or len(times) < 2:
        raise ValueError("fractional_sde: times must be a vector of at least 2 time points")
    if not bool((times[1:] > times[:-1]).all()):
        raise ValueError("fractional_sde: times must be strictly increasing")
    if hurst is None:
        hurst = pyro.param(f"{name}_hurst", torch.tensor(0.5, device=times.device),
                           constraint=constraints.interval(0.0, 1.0))
    H = torch.as_tensor(hurst).clamp(0.01, 0.99)
    if control == "optimal" or elbo == "moments":
        if control == "optimal" and torch.jit.is_tracing():
            # the optimum is recomputed from the current parameters at every call, outside
            # autograd; a traced ELBO would replay the first call's control as a constant
            raise ArgumentError("fractional_sde: control=optimal recomputes its control at "
                                "every step, which a traced ELBO (jit=True) would freeze; "
                                "fit without jit", argument="control")
        parts = _closed_form_parts(observation, times, *raw, x0, kind, D, dt, gamma_max)
        if isinstance(parts, str):
            what = "control=optimal" if control == "optimal" else "elbo=moments"
            raise ArgumentError(
                f"fractional_sde: {what} needs the closed form of a linear-Gaussian "
                f"model (an affine drift, a constant diffusion, x0 ~ Normal, one Normal "
                f"observation of the path), and here {parts}",
                argument="control" if control == "optimal" else "elbo")
        if control == "optimal" and kind != 2:
            raise ArgumentError("fractional_sde: control=optimal needs kind=2 (Y(0) = 0)",
                                argument="kind")
        return _fit_closed_form(name, parts, times, H, K, kind, gamma_max, gamma_min, dt,
                                control, elbo or "moments", D, noise)
    widths = torch.as_tensor(hidden).reshape(-1).tolist()
    if not all(float(h) == int(h) and int(h) >= 1 for h in widths):
        raise ArgumentError(f"fractional_sde: hidden takes layer widths (positive whole "
                            f"numbers), got {widths}", argument="hidden")
    hidden = [int(h) for h in widths]
    use_data = data is not None and control != "affine"
    # cached like every network (rt.reset_networks at the start of a fit gives q = p again)
    if control == "affine":
        n_steps = euler_steps(times, dt, float(gamma_max))
        ctrl = pyro.module(f"{name}_control",
                           network(f"{name}_control", AffineControl, n_steps, D, K))
        control = "noise"             # it outputs u itself
    else:
        ctrl = pyro.module(f"{name}_control",
                           network(f"{name}_control", Control, D, K, tuple(hidden),
                                   int(n_freq), data=use_data))
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
