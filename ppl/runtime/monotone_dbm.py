"""Monotone deep Boltzmann machines: mean-field inference with a unique fixed point.

Maths in ``shared/METHODS.md`` §5 (Feng, Winston & Kolter, TMLR 2023). Units are
categorical, ``x_i`` one-hot in ``{0,1}^{k_i}``; the energy couples units through a
symmetric, block-hollow matrix ``Phi`` (``Phi_ii = 0`` for every unit block). Mean-field
inference is the fixed point ``q = blockwise_softmax(Phi q + b)`` with observed units
clamped to their one-hot values.

Monotone parametrisation: ``Phi = s (D - A^T A)``, ``D = blockdiag_i((A^T A)_ii)``, one
global scale ``s = min(1, (1 - m) / max_i ||(A^T A)_ii||_2)``. Then ``I - Phi >= m I``,
the mean-field free energy ``F(q) = -1/2 q^T Phi q - b^T q + sum q log q`` is m-strongly
convex on the product of simplices and the fixed point is unique for every clamping
pattern (a principal submatrix keeps the bound).

The wider class ``cap = c in (1, 2]``: the negative entropy is 2-strongly convex on each
simplex along the tangent space ``T`` (per-unit sum-zero vectors: ``sum v_i^2/q_i >=
||v||_1^2 >= 2 ||v||_2^2``), so ``F`` stays strongly convex whenever
``lambda_max(P Phi P) <= c - m`` on ``T`` (``P`` the blockwise centring projector). Then
``s = min(1, (c - m) / max_i ||P (A^T A)_ii P||_2)`` and the solvers split
``F = g_c + f_c`` with ``g_c = 1/2 q^T (c I - Phi) q - b^T q`` and
``f_c = sum q log q - c/2 ||q||^2``, convex for ``c <= 2``.

Splitting ``F = g + f`` with ``g(q) = 1/2 q^T (I - Phi) q - b^T q`` and
``f(q) = sum q log q - 1/2 ||q||^2`` (whose prox is softmax): forward-backward is
``q <- prox_{alpha f}((1 - alpha) q + alpha (Phi q + b))``; Peaceman-Rachford uses the
resolvent ``(I + alpha (I - Phi))^{-1}`` (a cached Cholesky factor) and ``prox_{alpha f}``.
Gradients: implicit differentiation through the fixed point (the adjoint fixed point
``u = J_T(q*)^T u + dl/dq`` solved with the same Anderson iteration).
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch
from pyro.distributions import TorchDistribution
from torch import nn

from .errors import ArgumentError


# ---------------------------------------------------------------------------------------
# Units and layout
class Units(NamedTuple):
    """``n`` categorical units with ``k`` states each (binary units: ``k = 2``)."""

    n: int
    k: int


def units(n, k) -> Units:
    """The language builtin ``categorical(n, k)``: a group of ``n`` units of ``k`` states."""
    n, k = int(n), int(k)
    if n < 1 or k < 2:
        raise ValueError(f"categorical(n, k) needs n >= 1 units and k >= 2 states; "
                         f"got n={n}, k={k}")
    return Units(n, k)


def _as_units(u, argument: str | None = None) -> list[Units]:
    """A units value, a list of them, or a stacked ``[L, 2]`` tensor of (n, k) rows; a
    number or a word is an :class:`ArgumentError` at ``argument``."""
    if u is None:
        return []
    if isinstance(u, (bool, int, float, str)) or (
            isinstance(u, torch.Tensor) and u.dim() == 0):
        shown = repr(u) if isinstance(u, str) else f"{float(u):g}"
        what = ("a list of unit groups, e.g. hidden=[categorical(64, 4)] (one group per "
                "hidden tier)" if argument == "hidden"
                else f"a unit group, e.g. {argument or 'visible'}=categorical(64, 4)")
        raise ArgumentError(f"monotone_dbm: {argument or 'units'} takes {what}, not "
                            f"{shown}", argument=argument)
    if isinstance(u, Units):
        return [u]
    if isinstance(u, torch.Tensor):
        t = u.reshape(-1, 2) if u.numel() % 2 == 0 else None
        if t is None:
            raise ValueError("units must be categorical(n, k) values")
        return [units(int(a), int(b)) for a, b in t.tolist()]
    if isinstance(u, (list, tuple)) and len(u) == 2 and all(
            isinstance(x, (int, float)) for x in u):
        return [units(*u)]
    out: list[Units] = []
    for x in u:
        out += _as_units(x)
    return out


class Layout:
    """Groups of units laid out in one vector of ``d = sum n_g k_g`` coordinates."""

    def __init__(self, groups: list[tuple[str, Units]]):
        self.groups = groups
        self.segments = []  # (name, offset, n, k)
        off = 0
        unit_k = []
        for name, u in groups:
            self.segments.append((name, off, u.n, u.k))
            off += u.n * u.k
            unit_k += [u.k] * u.n
        self.d = off
        self.unit_k = unit_k
        self.n_units = len(unit_k)
        # unit index of each coordinate, and each unit's first coordinate
        owner = []
        for i, k in enumerate(unit_k):
            owner += [i] * k
        # built on the CPU whatever the default device, and moved where it is asked for
        self.owner = torch.tensor(owner, dtype=torch.long, device="cpu")
        self._block_masks: dict = {}

    def segment(self, name: str):
        for s in self.segments:
            if s[0] == name:
                return s
        raise KeyError(name)

    def layer_mask(self, device) -> torch.Tensor:
        """``[d, d]`` boolean, True where two coordinates belong to groups in consecutive
        layers of the order ``visible, hidden0, ..., label`` (the groups' order): the
        couplings a layered Boltzmann machine keeps. One hidden tier gives a restricted
        Boltzmann machine with a label on the visible side (visible-hidden and
        hidden-label blocks only); more tiers give a layered DBM."""
        key = ("layers", str(torch.device(device)))
        if key not in self._block_masks:
            layer = []
            for i, (_, _, n, k) in enumerate(self.segments):
                layer += [i] * (n * k)
            t = torch.tensor(layer, dtype=torch.long, device=device)
            self._block_masks[key] = (t[:, None] - t[None, :]).abs() == 1
        return self._block_masks[key]

    def layered_rows(self, rank: int, layer_ranks=None) -> torch.Tensor:
        """``[rank, d]`` boolean row-block pattern of a layered monotone ``A``: one row
        block per pair of consecutive groups ``(g, g+1)`` (visible-hidden0, ...,
        last hidden-label), nonzero only on the columns of its two groups. Then
        ``A^T A = sum_g A_g^T A_g`` couples only coordinates within one group or in
        consecutive groups, and so does ``Phi = s (D - A^T A)`` (METHODS §5: the layered
        structure is a block pattern of ``A``).

        Row-block sizes: ``layer_ranks`` (one positive int per pair) when given, else
        ``rank`` split in proportion to the pairs' one-hot dimensions ``d_g + d_{g+1}``
        (largest remainders, at least one row each)."""
        dims = [n * k for _, _, n, k in self.segments]
        offs = [off for _, off, _, _ in self.segments]
        pairs = len(dims) - 1
        if pairs < 1:
            raise ArgumentError("pattern='layered' needs at least two groups (visible and "
                                "a hidden tier or the label)", argument="pattern")
        if layer_ranks is not None:
            rows = [int(r) for r in _flat_ints(layer_ranks)]
            if len(rows) != pairs or min(rows) < 1:
                raise ValueError(f"layer_ranks needs {pairs} positive row counts (one per "
                                 f"pair of consecutive groups), got {rows}")
        else:
            if rank < pairs:
                raise ValueError(f"rank={rank} is below the {pairs} row blocks of the "
                                 f"layered pattern")
            w = [dims[g] + dims[g + 1] for g in range(pairs)]
            extra = rank - pairs  # one row each first, the rest in proportion
            share = [extra * x / sum(w) for x in w]
            rows = [1 + int(math.floor(x)) for x in share]
            order = sorted(range(pairs), key=lambda g: -(share[g] - math.floor(share[g])))
            for g in order[:rank - sum(rows)]:
                rows[g] += 1
        mask = torch.zeros(sum(rows), self.d, dtype=torch.bool)
        r0 = 0
        for g, r in enumerate(rows):
            mask[r0:r0 + r, offs[g]:offs[g + 1] + dims[g + 1]] = True
            r0 += r
        return mask

    def block_mask(self, device=None) -> torch.Tensor:
        """``[d, d]`` boolean, True inside a unit's own diagonal block (cached per device:
        it is needed at every evaluation of ``Phi``)."""
        key = str(torch.device(device) if device is not None else self.owner.device)
        if key not in self._block_masks:
            o = self.owner.to(device)
            self._block_masks[key] = o[:, None] == o[None, :]
        return self._block_masks[key]

    def _cached(self, name: str, device, dtype, build) -> torch.Tensor:
        """``build(dtype)`` (made on the CPU, whatever the default device), moved to
        ``device`` and cached per name, device and dtype."""
        dtype = dtype or torch.get_default_dtype()
        key = (name, str(torch.device(device) if device is not None else "cpu"), dtype)
        if key not in self._block_masks:
            self._block_masks[key] = build(dtype).to(device)
        return self._block_masks[key]

    def _unit_sizes(self, dtype) -> torch.Tensor:
        """``[d]`` on the CPU: ``k_i`` of the unit that owns each coordinate."""
        return torch.tensor(self.unit_k, dtype=dtype, device="cpu")[self.owner]

    def centring(self, device=None, dtype=None) -> torch.Tensor:
        """``[d, d]`` blockwise centring projector ``P = I - blockdiag_i(1 1^T / k_i)``:
        the orthogonal projector onto the tangent space ``T`` of the product of simplices
        (per-unit sum-zero vectors). Cached per device and dtype."""
        return self._cached("centring", device, dtype, lambda dt: (
            torch.eye(self.d, dtype=dt, device="cpu")
            - self.block_mask("cpu").to(dt) / self._unit_sizes(dt)[:, None]))

    def uniform(self, device=None, dtype=None) -> torch.Tensor:
        """``[d]`` the uniform point ``qbar`` of the product of simplices (``1 / k_i`` on
        unit ``i``'s coordinates). Cached per device and dtype."""
        return self._cached("uniform", device, dtype, lambda dt: 1.0 / self._unit_sizes(dt))

    def centre(self, x: torch.Tensor) -> torch.Tensor:
        """``x P`` for ``x [..., d]``: each unit's mean subtracted from its coordinates
        along the last dimension, in ``O(d)`` per row (``P`` of :meth:`centring` is never
        formed)."""
        parts = []
        for _, off, n, k in self.segments:
            seg = x[..., off:off + n * k].reshape(*x.shape[:-1], n, k)
            parts.append((seg - seg.mean(-1, keepdim=True)).reshape(*x.shape[:-1], n * k))
        return torch.cat(parts, dim=-1)

    def tangent_basis(self, device=None, dtype=None) -> torch.Tensor:
        """``[d, d - n_units]`` orthonormal basis ``Q`` of ``T`` (``Q Q^T = P``): per unit,
        the eigenvectors of its centring block with eigenvalue 1. Cached."""
        def build(dt):
            Q = torch.zeros(self.d, self.d - self.n_units, dtype=torch.float64, device="cpu")
            r = c = 0
            for k in self.unit_k:
                Pk = torch.eye(k, dtype=torch.float64, device="cpu") - 1.0 / k
                Q[r:r + k, c:c + k - 1] = torch.linalg.eigh(Pk)[1][:, 1:]
                r, c = r + k, c + k - 1
            return Q.to(dt)

        return self._cached("tangent", device, dtype, build)

def _flat_ints(x) -> list:
    """A list of ints from a Python list or a (language-side) tensor."""
    if isinstance(x, torch.Tensor):
        return [int(v) for v in x.reshape(-1).tolist()]
    return [int(v) for v in x]


# ---------------------------------------------------------------------------------------
# The alpha-proximal softmax and sigmoid
def _prox_softmax_solve(y: torch.Tensor, alpha: float, tol: float) -> torch.Tensor:
    """``q_i = (alpha/(1-alpha)) W0(((1-alpha)/alpha) exp((y_i - nu)/alpha - 1))``.

    Solved in Newton form: ``u = log q_i`` from ``(1-alpha) e^u + alpha u = y_i - alpha - nu``
    (convex increasing in u; Newton from the right converges monotonically), and the
    multiplier ``nu`` from ``sum_i q_i(nu) = 1`` (convex decreasing in nu; Newton from the
    left end of the bracket ``[max y - 1, ...]`` converges monotonically). The bracket's
    left end is where the largest ``q_i`` equals 1.
    """
    a = alpha
    c = y - a
    # exp below the smallest normal number is slow (subnormals) and changes nothing
    floor = math.log(torch.finfo(y.dtype).tiny) + 1.0

    def exp(u):
        return torch.exp(u.clamp_min(floor))

    nu = y.max(dim=-1, keepdim=True).values - 1.0
    r = c - nu
    u = torch.minimum(torch.zeros_like(r), r / a)
    prev = math.inf
    for _ in range(50):
        for _ in range(4):
            e = exp(u)
            u = u - ((1 - a) * e + a * u - r) / ((1 - a) * e + a)
        q = exp(u)
        g = q / ((1 - a) * q + a)
        phi = q.sum(-1, keepdim=True) - 1.0
        worst = float(phi.abs().max())
        if worst < tol or worst >= prev:  # converged, or at the rounding floor
            break
        prev = worst
        nu = nu + phi / g.sum(-1, keepdim=True)
        r = c - nu
    for _ in range(3):
        e = exp(u)
        u = u - ((1 - a) * e + a * u - r) / ((1 - a) * e + a)
    q = exp(u)
    return q / q.sum(-1, keepdim=True)


class _ProxSoftmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, alpha, tol):
        if alpha == 1.0:
            q = torch.softmax(y, dim=-1)
        else:
            q = _prox_softmax_solve(y, alpha, tol)
        ctx.save_for_backward(q)
        ctx.alpha = alpha
        return q

    @staticmethod
    def backward(ctx, v):
        (q,) = ctx.saved_tensors
        g = _prox_g(q, ctx.alpha)
        return g * v - g * (g * v).sum(-1, keepdim=True) / g.sum(-1, keepdim=True), None, None


def _prox_g(q: torch.Tensor, alpha: float) -> torch.Tensor:
    return q / (alpha + (1 - alpha) * q)


def prox_softmax(y: torch.Tensor, alpha: float = 1.0, tol: float | None = None) -> torch.Tensor:
    """``prox_{alpha f}(y)`` over the last dimension, ``f(q) = sum q log q - 1/2 ||q||^2`` on
    the simplex; ``alpha = 1`` is softmax. Differentiable with the closed-form Jacobian
    ``diag(g) - g g^T / sum g``, ``g_i = q_i / (alpha + (1 - alpha) q_i)`` (METHODS §5)."""
    alpha = float(alpha)
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    if tol is None:  # Newton stops at the rounding floor of a sum of k terms
        tol = 16 * y.shape[-1] * torch.finfo(y.dtype).eps
    return _ProxSoftmax.apply(y, alpha, tol)


def prox_softmax_jacobian(q: torch.Tensor, alpha: float) -> torch.Tensor:
    """The Jacobian ``d prox / d y`` at the output ``q``: ``diag(g) - g g^T / sum g``."""
    g = _prox_g(q, alpha)
    return torch.diag_embed(g) - g[..., :, None] * g[..., None, :] / g.sum(-1)[..., None, None]


def prox_softmax_cap(y: torch.Tensor, alpha: float, cap: float = 1.0) -> torch.Tensor:
    """``prox_{alpha f_c}(y)`` for ``f_c(q) = sum q log q - c/2 ||q||^2`` on the simplex
    (``c = cap``; ``c = 1`` is :func:`prox_softmax`). Completing the square,
    ``f_c + ||q - y||^2 / (2 alpha)`` equals ``f_1 + ||q - y/s||^2 / (2 beta)`` up to a
    constant with ``s = 1 - alpha (c - 1)`` and ``beta = alpha / s``, so
    ``prox_{alpha f_c}(y) = prox_{beta f_1}(y / s)``; ``beta <= 1`` needs ``alpha <= 1/c``.
    ``f_c`` is convex for ``c <= 2`` (the entropy is 2-strongly convex on the simplex's
    tangent space; module docstring, METHODS §5). Differentiable (chain rule through
    :func:`prox_softmax`)."""
    alpha, cap = float(alpha), float(cap)
    if cap == 1.0:
        return prox_softmax(y, alpha)
    if not 0.0 < alpha <= 1.0 / cap:
        raise ValueError(f"alpha must be in (0, 1/cap] = (0, {1.0 / cap:.4g}] at cap={cap:g}, "
                         f"got {alpha}")
    s = 1.0 - alpha * (cap - 1.0)
    return prox_softmax(y / s, alpha / s)


class _ProxSigmoid(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha, tol):
        a = alpha
        if a == 1.0:
            p = torch.sigmoid(x)
        else:
            # (1-a)(2p-1) + a logit(p) = x, Newton on l = logit(p) kept in its bracket
            lo, hi = (x - (1 - a)) / a, (x + (1 - a)) / a
            lgt = x
            for _ in range(100):
                s = torch.sigmoid(lgt)
                G = (1 - a) * (2 * s - 1) + a * lgt - x
                lo = torch.where(G < 0, lgt, lo)
                hi = torch.where(G > 0, lgt, hi)
                step = lgt - G / (2 * (1 - a) * s * (1 - s) + a)
                inside = (step > lo) & (step < hi)
                lgt = torch.where(inside, step, 0.5 * (lo + hi))
                if float(G.abs().max()) < tol:
                    break
            p = torch.sigmoid(lgt)
        ctx.save_for_backward(p)
        ctx.alpha = a
        return p

    @staticmethod
    def backward(ctx, v):
        (p,) = ctx.saved_tensors
        return v * prox_sigmoid_derivative(p, ctx.alpha), None, None


def prox_sigmoid(x: torch.Tensor, alpha: float = 1.0, tol: float | None = None) -> torch.Tensor:
    """The binary prox: ``p`` with ``(1-alpha)(2p-1) + alpha log(p/(1-p)) = x``, i.e. the
    first coordinate of ``prox_softmax([x, 0], alpha)``; ``alpha = 1`` is the sigmoid."""
    alpha = float(alpha)
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    if tol is None:
        tol = 64 * torch.finfo(x.dtype).eps
    return _ProxSigmoid.apply(x, alpha, tol)


def prox_sigmoid_derivative(p: torch.Tensor, alpha: float) -> torch.Tensor:
    """``dp/dx = 1 / (2 (1 - alpha) + alpha / (p (1 - p)))``."""
    return 1.0 / (2 * (1 - alpha) + alpha / (p * (1 - p)))


# ---------------------------------------------------------------------------------------
# Coupling matrices
def monotone_phi(A: torch.Tensor, layout: Layout, margin: float, cap: float = 1.0):
    """``Phi = s (D - A^T A)`` with the global scale ``s``; returns ``(Phi, s)``.

    ``cap = 1`` (Feng et al.): ``s = min(1, (1 - m) / max_i ||(A^T A)_ii||_2)``, so
    ``I - Phi >= m I`` on all of R^d. ``cap = c in (1, 2]``: ``s = min(1, (c - m) /
    max_i ||P_i (A^T A)_ii P_i||_2)`` with ``P_i = I - 1 1^T / k_i``; since
    ``P (D - A^T A) P <= P D P``, ``lambda_max(P Phi P) <= c - m`` on the tangent space,
    which keeps the free energy strongly convex for ``c <= 2`` (module docstring)."""
    AtA = A.T @ A
    blocks = layout.block_mask(A.device)
    D = AtA * blocks
    # only the tangent directions enter the uniqueness bound when cap != 1
    norms = unit_block_norms(AtA, layout, tangent=cap != 1.0)
    # all blocks zero (e.g. A = 0): s = 1; the clamp keeps the gradient finite
    top = torch.cat([v for _, v in norms]).max().clamp_min(torch.finfo(A.dtype).tiny)
    s = torch.clamp((float(cap) - margin) / top, max=1.0)
    return s * (D - AtA), s


def unit_block_norms(AtA: torch.Tensor, layout: Layout, tangent: bool) -> list:
    """``(segment name, norms)`` per segment of ``layout``: the spectral norms
    ``||(A^T A)_ii||_2`` of its units' diagonal blocks ([n]), or with ``tangent``
    ``||P_i (A^T A)_ii P_i||_2`` (``P_i = I - 1 1^T / k_i``): the norms the global scale
    ``s`` divides by (:func:`monotone_phi`)."""
    out = []
    for name, off, n, k in layout.segments:
        idx = torch.arange(off, off + n * k, device=AtA.device).view(n, k)
        blk = AtA[idx[:, :, None], idx[:, None, :]]
        if tangent:
            Pk = torch.eye(k, dtype=AtA.dtype, device=AtA.device) - 1.0 / k
            blk = Pk @ blk @ Pk
        out.append((name, torch.linalg.matrix_norm(blk, ord=2)))
    return out


def lambda_max_tangent(Phi: torch.Tensor, layout: Layout) -> float:
    """``lambda_max(P Phi P)`` on the tangent space ``T`` of the product of simplices
    (``Q^T Phi Q`` with :meth:`Layout.tangent_basis`): the quantity the cap bounds."""
    Q = layout.tangent_basis(Phi.device, Phi.dtype)
    with torch.no_grad():
        return float(torch.linalg.eigvalsh(Q.T @ Phi @ Q)[-1])


def conv_operator(w: torch.Tensor, side: int, k: int) -> torch.Tensor:
    """The matrix of the zero-padded 'same' convolution with kernel ``w``
    ``[C_out, k, h, h]`` (odd ``h``) on a ``side x side`` grid of ``k``-state units:
    ``[C_out * side^2, side^2 * k]``, columns in the layout's unit-major order (unit = pixel
    in row-major order, then its state = input channel). Differentiable in ``w``; each
    column is the kernel's response to one one-hot state of one pixel, so ``A^T A``
    couples only pixels within ``h - 1`` of each other, with shared weights."""
    n = side * side
    idx = torch.arange(n * k, device=w.device)
    pos, c = idx // k, idx % k
    basis = torch.zeros(n * k, k, side, side, dtype=w.dtype, device=w.device)
    basis[idx, c, pos // side, pos % side] = 1.0
    out = torch.nn.functional.conv2d(basis, w, padding=w.shape[-1] // 2)
    return out.reshape(n * k, -1).T


def free_phi(W: torch.Tensor, layout: Layout, pattern: str = "full") -> torch.Tensor:
    """The unconstrained control: ``Phi = (W + W^T)/2`` with the unit blocks zeroed
    (``pattern="full"``: every pair of distinct units coupled, METHODS §5), or with every
    block outside consecutive layers zeroed (``pattern="layered"``,
    :meth:`Layout.layer_mask`: with one hidden tier, the plain RBM of METHODS §5's
    baseline and negative control)."""
    S = 0.5 * (W + W.T)
    if pattern == "layered":
        return S * layout.layer_mask(W.device)
    return S.masked_fill(layout.block_mask(W.device), 0.0)


# ---------------------------------------------------------------------------------------
# Clamping and the fixed-point maps
class Problem:
    """One batch of mean-field problems sharing ``Phi`` and ``b``.

    ``clamp_mask``: ``[B, d]`` boolean, True on the coordinates of observed units;
    ``clamp_value``: ``[B, d]``, their one-hot values (ignored elsewhere). ``cap``: the
    splitting constant ``c`` of the FB and PR maps (``g_c``, ``f_c`` in the module
    docstring; 1 is Feng et al.'s split).
    """

    def __init__(self, Phi, b, layout: Layout, clamp_mask=None, clamp_value=None,
                 cap: float = 1.0):
        self.Phi, self.b, self.layout = Phi, b, layout
        self.clamp_mask, self.clamp_value = clamp_mask, clamp_value
        self.cap = float(cap)
        # per-coupling work (Cholesky factors by alpha; (Phi_eff, b_eff)), shared with
        # the problem's _detached copy: dicts, so either copy fills them for both
        self._chol: dict = {}
        self._eff: dict = {}

    def effective(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Phi_eff, b_eff) = (P Phi P, b + P Phi qbar)`` (``qbar`` uniform): the same
        field as ``(Phi, b)`` up to per-unit constants on the product of simplices, so the
        same fixed points, and ``c I - Phi_eff`` is positive definite on all of R^d when
        ``lambda_max(P Phi P) < c`` (eigenvalue ``c`` off the tangent space), which the
        PR resolvent's Cholesky factor needs at ``cap > 1``. ``O(d^2)``: ``P`` is applied
        by per-unit centring of rows and columns, never as a matrix; cached."""
        if "eff" not in self._eff:
            lay = self.layout
            qbar = lay.uniform(self.Phi.device, self.Phi.dtype)
            Phi_eff = lay.centre(lay.centre(self.Phi).T).T
            b_eff = self.b + lay.centre(self.Phi @ qbar)
            self._eff["eff"] = (Phi_eff, b_eff)
        return self._eff["eff"]

    def prox(self, y: torch.Tensor, alpha: float, cap: float = 1.0) -> torch.Tensor:
        """Blockwise ``prox_{alpha f_cap}`` (:func:`prox_softmax_cap`; ``alpha = cap = 1``
        is the softmax), observed units clamped to their one-hot values."""
        parts = []
        for _, off, n, k in self.layout.segments:
            seg = y[:, off:off + n * k].reshape(y.shape[0], n, k)
            parts.append(prox_softmax_cap(seg, alpha, cap).reshape(y.shape[0], n * k))
        q = torch.cat(parts, dim=1)
        if self.clamp_mask is not None:
            q = torch.where(self.clamp_mask, self.clamp_value.to(q.dtype), q)
        return q

    def field(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.Phi + self.b

    def fb(self, z: torch.Tensor, alpha: float) -> torch.Tensor:
        """Damped forward-backward with the split ``c = cap``:
        ``prox_{alpha f_c}((1 - alpha c) z + alpha (Phi z + b))`` (``c = 1``:
        ``prox_{alpha f}((1-alpha) z + alpha (Phi z + b))``). On the product of simplices
        ``Phi`` and ``Phi_eff`` give the same step (per-unit constants cancel in the prox)."""
        c = self.cap
        return self.prox((1 - alpha * c) * z + alpha * self.field(z), alpha, c)

    def mean_field(self, z: torch.Tensor) -> torch.Tensor:
        """Plain parallel mean-field (the alpha = 1 step): ``softmax(Phi z + b)``."""
        return self.prox(self.field(z), 1.0)

    def residual(self, z: torch.Tensor) -> torch.Tensor:
        """Per-problem relative mean-field residual ``||z - T_MF(z)|| / ||z||``."""
        return (z - self.mean_field(z)).norm(dim=1) / z.norm(dim=1).clamp_min(1e-12)

    def cholesky(self, alpha: float) -> torch.Tensor:
        """Cached lower Cholesky factor of ``I + alpha (c I - Phi)`` (``c = cap``; at
        ``cap > 1`` with ``Phi_eff`` of :meth:`effective` in place of ``Phi``)."""
        if alpha not in self._chol:
            d = self.Phi.shape[0]
            eye = torch.eye(d, dtype=self.Phi.dtype, device=self.Phi.device)
            Phi = self.Phi if self.cap == 1.0 else self.effective()[0]
            self._chol[alpha] = torch.linalg.cholesky((1 + alpha * self.cap) * eye
                                                      - alpha * Phi)
        return self._chol[alpha]

    def random_start(self, batch: int, generator=None) -> torch.Tensor:
        """A random point of the product of simplices (observed units clamped)."""
        # drawn where the generator lives, so a CPU generator seeds CUDA runs too
        gdev = generator.device if generator is not None else self.Phi.device
        e = torch.empty(batch, self.layout.d, dtype=self.Phi.dtype, device=gdev)
        e = e.exponential_(generator=generator).to(self.Phi.device)
        y = torch.log(e)  # softmax(log Exp) is a Dirichlet(1) draw per unit
        return self.prox(y, 1.0)


# ---------------------------------------------------------------------------------------
# Fixed-point iteration with optional Anderson acceleration
def iterate(f, x0: torch.Tensor, *, anderson: int = 0, tol: float = 1e-4, max_iter: int = 50,
            lam: float = 1e-8, residual=None, stall: tuple | None = None,
            res_scale: float = 1.0):
    """Iterate ``x <- f(x)`` (rows are independent problems) until the scaled relative
    residual ``res_scale ||f(x) - x|| / ||f(x)||`` of every row is below ``tol``; with
    ``anderson = M > 0`` the next point mixes the last M images by Anderson's
    least-squares weights (type II), or takes the plain step on rows where those weights
    are undefined (no movement left, or a singular system).

    ``res_scale`` undoes a map's damping: the FB map with step alpha moves about
    ``alpha c`` times as far as the mean-field map, so :func:`solve_fb` passes
    ``1 / (alpha c)`` and its stopping rule stays a statement about the fixed point.

    Returns ``(x, info)``: ``info`` has ``iters``, ``res`` (per row, of the returned x,
    unscaled) and ``history`` (the largest scaled row residual, or ``residual(x)`` when
    given, per iteration); ``stall = (factor, window)`` stops early (``info["stalled"]``)
    when the largest row residual has not fallen by ``factor`` over ``window`` iterations.
    """
    B = x0.shape[0]
    x = x0
    fx = f(x)
    hist, own = [], []
    stalled = False
    best_x, best_res = fx, torch.full((B,), math.inf, dtype=x0.dtype, device=x0.device)
    Xs, Fs = [x], [fx]
    for _ in range(max_iter):
        res = (fx - x).norm(dim=1) / fx.norm(dim=1).clamp_min(1e-12)
        better = res < best_res
        best_x = torch.where(better[:, None], fx, best_x)
        best_res = torch.where(better, res, best_res)
        own.append(float(res.max()))
        hist.append(float(residual(fx).max()) if residual is not None else own[-1] * res_scale)
        if own[-1] * res_scale < tol:
            break
        if stall is not None and len(own) > stall[1] and own[-1] > stall[0] * own[-1 - stall[1]]:
            stalled = True
            break
        if anderson and len(Xs) > 1:
            n = len(Xs)
            X = torch.stack(Xs, 1)
            F = torch.stack(Fs, 1)
            G = F - X  # [B, n, d]
            H = G @ G.transpose(1, 2)
            raw = H.diagonal(dim1=1, dim2=2).mean(-1)
            # normalised before regularising: lam * scale underflows in float32 when
            # the steps are tiny (a small alpha), and the weights are scale-free
            scale = raw.clamp_min(torch.finfo(H.dtype).tiny)[:, None, None]
            H = H / scale + lam * torch.eye(n, dtype=H.dtype, device=H.device)
            ones = torch.ones(B, n, 1, dtype=H.dtype, device=H.device)
            w, err = torch.linalg.solve_ex(H, ones)
            w = w / w.sum(1, keepdim=True)
            xa = (w.transpose(1, 2) @ F)[:, 0]
            ok = (raw > 0) & (err == 0) & torch.isfinite(xa).all(1)
            x = torch.where(ok[:, None], xa, fx)
        else:
            x = fx
        fx = f(x)
        Xs.append(x)
        Fs.append(fx)
        if len(Xs) > max(anderson, 1):
            Xs.pop(0)
            Fs.pop(0)
    res = (fx - x).norm(dim=1) / fx.norm(dim=1).clamp_min(1e-12)
    better = res < best_res
    best_x = torch.where(better[:, None], fx, best_x)
    best_res = torch.where(better, res, best_res)
    return best_x, {"iters": len(own), "res": best_res, "history": hist, "stalled": stalled}


# ---------------------------------------------------------------------------------------
# Solvers
def solve_fb(p: Problem, z0: torch.Tensor, *, alpha: float = 0.125, anderson: int = 5,
             tol: float = 1e-4, max_iter: int = 50, stall: float = 0.95, window: int = 10,
             residual=None, halvings: int = 10):
    """Damped forward-backward (Anderson-accelerated when ``anderson > 0``); alpha is halved
    and the run restarted from the best point when the residual stalls (fails to fall by
    the factor ``stall`` over ``window`` iterations), down to the floor
    ``alpha * 2^-halvings`` (``alpha`` the starting step); a stall there ends the solve
    with ``info["stalled"] = True``.
    Converges for alpha < 2/L(c I - Phi_eff) (``c = p.cap``; at ``c > 1`` also
    ``alpha <= 1/c``, the prox of ``f_c``).

    Stops when ``||T(z) - z|| / (alpha c ||T(z)||) < tol`` (the FB residual rescaled to the
    mean-field one: at ``alpha = 1/c`` the FB map is the mean-field map). Returns, per
    row, the end point of the restart with the lowest mean-field residual (in float32 a
    small alpha's prox is ill-conditioned, ``~ eps / alpha``, so later restarts can end
    further from the fixed point). ``info``: ``res`` the mean-field residual
    :meth:`Problem.residual` of the returned ``z``, ``fb_res`` the FB map's own (of the
    last restart), ``alpha`` the final step, ``stalled``."""
    z, used, hist = z0, 0, []
    info: dict = {}
    a = float(alpha)
    floor = a * 2.0 ** -halvings
    best_z, best_res = None, None
    while used < max_iter:
        z, info = iterate(lambda v, a=a: p.fb(v, a), z, anderson=anderson, tol=tol,
                          max_iter=max_iter - used, residual=residual,
                          stall=(stall, window), res_scale=1.0 / (a * p.cap))
        hist += info["history"]
        used += info["iters"]
        r = p.residual(z)
        if best_z is None:
            best_z, best_res = z, r
        else:
            better = r < best_res
            best_z = torch.where(better[:, None], z, best_z)
            best_res = torch.where(better, r, best_res)
        if not info["stalled"] or a / 2 < floor:
            break
        a /= 2
    if best_z is None:  # max_iter = 0
        best_z, best_res = z0, p.residual(z0)
    info = dict(info)
    info.update(iters=used, history=hist, alpha=a, fb_res=info.get("res"), res=best_res)
    return best_z, info


def solve_pr(p: Problem, z0: torch.Tensor, *, alpha: float | None = None, anderson: int = 0,
             tol: float = 1e-4, max_iter: int = 50, residual=None):
    """Peaceman-Rachford with the split ``c = p.cap``:
    ``x = (I + alpha(c I - Phi))^{-1}(u + alpha b)``, ``y = prox_{alpha f_c}(2x - u)``,
    ``u <- u + 2(y - x)``; converges for every admissible alpha since ``g_c`` is strongly
    convex (at ``c > 1`` on ``(Phi_eff, b_eff)``, :meth:`Problem.effective`; the prox
    needs ``alpha <= 1/c``; default ``1/c``). The resolvent uses a cached Cholesky
    factor. Stops on the residual of ``u``; ``info["res"]`` is the mean-field residual
    of the returned ``z`` (``pr_res`` the one it stopped on)."""
    alpha = 1.0 / p.cap if alpha is None else float(alpha)
    L = p.cholesky(alpha)
    b = p.b if p.cap == 1.0 else p.effective()[1]

    def res_g(u):
        rhs = (u + alpha * b).T
        return torch.cholesky_solve(rhs, L).T

    def step(u):
        x = res_g(u)
        y = p.prox(2 * x - u, alpha, p.cap)
        return u + 2 * (y - x)

    def z_of(u):
        return p.prox(2 * res_g(u) - u, alpha, p.cap)

    res_fn = (lambda u: residual(z_of(u))) if residual is not None else None
    u, info = iterate(step, z0, anderson=anderson, tol=tol, max_iter=max_iter,
                      residual=res_fn)
    z = z_of(u)
    info.update(pr_res=info["res"], res=p.residual(z))
    return z, info


def solve_mf(p: Problem, z0: torch.Tensor, *, tol: float = 1e-4, max_iter: int = 50,
             anderson: int = 0, residual=None):
    """Plain (undamped, parallel) mean-field iteration ``z <- softmax(Phi z + b)``;
    ``info["res"]`` is :meth:`Problem.residual` of the returned ``z``, as for FB and PR."""
    z, info = iterate(p.mean_field, z0, anderson=anderson, tol=tol, max_iter=max_iter,
                      residual=residual)
    info["res"] = p.residual(z)
    return z, info


SOLVERS = {"fb": solve_fb, "pr": solve_pr, "mf": solve_mf}


def solve(p: Problem, z0=None, solver: str = "fb", **opts):
    if z0 is None:
        z0 = p.prox(p.b.expand(_batch(p), -1), 1.0)
    if solver not in SOLVERS:
        raise ArgumentError(f"monotone_dbm: solver must be one of {', '.join(SOLVERS)}, got "
                            f"{solver!r}", argument="solver")
    return SOLVERS[solver](p, z0, **opts)


def _batch(p: Problem) -> int:
    return p.clamp_mask.shape[0] if p.clamp_mask is not None else 1


# ---------------------------------------------------------------------------------------
# Implicit differentiation
def implicit_fixed_point(p: Problem, z_star: torch.Tensor, *, alpha: float = 0.125,
                         anderson: int = 5, tol: float | None = None, max_iter: int = 500,
                         direct: bool = False) -> torch.Tensor:
    """Attach gradients to the fixed point ``z* = T(z*)`` of the FB map ``T`` (any alpha:
    the fixed point does not depend on it) by implicit differentiation: the incoming
    gradient ``v`` is replaced by the solution ``u`` of the adjoint fixed point
    ``u = J_T(z*)^T u + v`` (Anderson iteration, or a dense solve when ``direct``), then
    pulled back through one application of ``T`` to ``Phi`` and ``b``. Pass the step the
    forward solve ended at (``info["alpha"]`` of :func:`solve_fb`): the adjoint contracts
    at the rate the forward map does. The adjoint stops on its residual rescaled by
    ``1 / (alpha c)`` (as :func:`solve_fb`) and warns when it ends above ``tol``."""
    z_star = z_star.detach()
    z = p.fb(z_star, alpha)
    if not z.requires_grad:
        return z
    z0 = z_star.clone().requires_grad_()
    with torch.enable_grad():
        f0 = p.fb(z0, alpha)

    def vjp(u):
        return torch.autograd.grad(f0, z0, u, retain_graph=True)[0]

    def hook(v):
        if direct:
            d = v.shape[1]
            eye = torch.eye(d, dtype=v.dtype, device=v.device)
            # row i of J_T is J_T^T e_i
            J = torch.stack([vjp(eye[i].expand_as(v)) for i in range(d)], 1)  # [B, d, d]
            return torch.linalg.solve(eye - J.transpose(1, 2), v.unsqueeze(-1)).squeeze(-1)
        t = tol if tol is not None else max(1e-6, 100 * torch.finfo(v.dtype).eps)
        scale = 1.0 / (alpha * p.cap)
        u, info = iterate(lambda u: vjp(u) + v, v, anderson=anderson, tol=t,
                          max_iter=max_iter, res_scale=scale)
        worst = float(info["res"].max()) * scale
        if worst >= t:
            warnings.warn(f"monotone_dbm: the implicit adjoint stopped at residual "
                          f"{worst:.3g} >= tol {t:.3g} after {info['iters']} iterations "
                          f"(alpha={alpha:.3g}); its gradient is approximate",
                          RuntimeWarning, stacklevel=2)
        return u

    z.register_hook(hook)
    return z


def unrolled_fixed_point(p: Problem, z0: torch.Tensor, *, alpha: float = 1.0,
                         steps: int = 200) -> torch.Tensor:
    """The fixed point by backpropagating through ``steps`` FB iterations (the control
    used to check implicit gradients, and the baseline's training gradient)."""
    z = z0
    for _ in range(steps):
        z = p.fb(z, alpha) if alpha != 1.0 else p.mean_field(z)
    return z


# ---------------------------------------------------------------------------------------
# The model
class MonotoneDBM(nn.Module):
    """A DBM over ``visible``, ``hidden`` tiers and an optional ``label`` unit group.

    ``monotone=True``: ``Phi = s (D - A^T A)`` (dense ``A`` of ``rank`` rows, or with
    ``coupling="conv"`` the convolution operators of :func:`conv_operator`; margin
    guaranteed; with ``pattern="layered"`` ``A`` in one row block per pair of consecutive
    groups, dense (:meth:`Layout.layered_rows`) or convolutional (``channels`` feature
    maps per block), so ``Phi`` couples only within a group and between consecutive
    groups: the label reads the pixels only through the hidden tier, construct page,
    "What the hidden tier can add to the label's evidence"); ``monotone=False``: the
    unconstrained control ``Phi = sym(W)`` with zero unit blocks (``pattern="full"``) or
    only the blocks between consecutive layers (``pattern="layered"``: one hidden tier is
    a plain RBM with a label) and plain mean-field. Data: ``visible`` as integer states
    ``[B, n_v]`` with ``-1`` (or NaN) for missing; ``label`` ``[B]`` with ``-1`` for
    unknown.

    ``cap`` (monotone model; ignored by the control): 1 keeps Feng et al.'s class
    ``I - Phi >= m I``; ``c in (1, 2]`` (default 2) the wider class
    ``lambda_max(P Phi P) <= c - m`` on the simplices' tangent space
    (:func:`monotone_phi`), still with one fixed point per clamping (module docstring),
    solved with the ``c``-split FB/PR maps (``alpha <= 1/c``).

    ``evidence_gain`` (default ``None``: off): learned gains ``gamma`` (one per visible
    unit, starting at this value) with which a shown pixel enters the field of the free
    units, ``gamma_i x_i`` instead of ``x_i`` (:meth:`problem`). Clamped values only set
    the free units' bias, so every gain keeps one fixed point per clamping; the cap then
    bounds only the couplings among free units. A conditional model: a pixel acts more
    strongly when shown than when imputed, so the two no longer share one joint energy.
    """

    def __init__(self, visible, hidden=None, label=None, margin: float = 0.01,
                 rank: int | None = None, monotone: bool = True, solver: str = "fb",
                 alpha: float = 0.125, tol: float = 1e-4, max_iter: int = 50,
                 anderson: int = 5, observed: float | tuple[float, float] = 0.4,
                 mask: str = "random",
                 init_scale: float = 1.0, seed: int | None = None,
                 readout: float | None = 10.0, coupling: str = "dense", kernel: int = 3,
                 channels: int = 8, pattern: str = "full", label_readout: float = 1.0,
                 layer_ranks=None, cap: float = 2.0, evidence_gain: float | None = None):
        super().__init__()
        _check_options(rank=rank, max_iter=max_iter, anderson=anderson, kernel=kernel,
                       channels=channels, seed=seed, monotone=monotone, solver=solver,
                       coupling=coupling, pattern=pattern, mask=mask)
        groups = [("visible", _as_units(visible, "visible")[0])]
        for i, h in enumerate(_as_units(hidden, "hidden")):
            groups.append((f"hidden{i}", h))
        if label is not None:
            groups.append(("label", _as_units(label, "label")[0]))
        self.layout = Layout(groups)
        self.margin = float(margin)
        self.monotone = bool(monotone)
        self.solver, self.alpha, self.tol = solver, float(alpha), float(tol)
        if not 1.0 <= float(cap) <= 2.0:
            raise ArgumentError(f"monotone_dbm: cap must be in [1, 2] (the free energy stays "
                                f"strongly convex up to lambda_max(P Phi P) < 2), got {cap}",
                                argument="cap")
        # the unconstrained control has no cap: its Phi = sym(W) is never scaled, and its
        # plain mean-field (the alpha = 1, c = 1 step) ignores the split
        self.cap = float(cap) if self.monotone else 1.0
        if not 0.0 < self.margin < self.cap:
            raise ArgumentError(f"monotone_dbm: margin must be in (0, cap) = "
                                f"(0, {self.cap:g}), got {margin}", argument="margin")
        if self.alpha * self.cap > 1.0:
            raise ArgumentError(f"monotone_dbm: alpha must be <= 1/cap = {1 / self.cap:.4g} "
                                f"(the prox of f_cap), got {alpha}", argument="alpha")
        self.max_iter, self.anderson = int(max_iter), int(anderson)
        self.observed, self.mask = _observed_option(observed), str(mask)
        d = self.layout.d
        gen = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        # drawn on the CPU (the seed's generator), then placed on the default device
        place = {"dtype": torch.get_default_dtype(), "device": torch.empty(0).device}
        self.coupling, self.pattern = str(coupling), str(pattern)
        if layer_ranks is not None and not (self.monotone and self.pattern == "layered"
                                            and coupling == "dense"):
            raise ArgumentError("layer_ranks sets the row blocks of a layered dense monotone "
                                "A; use it with pattern='layered', coupling='dense' and "
                                "monotone=true (a layered conv A has `channels` feature maps "
                                "per row block)", argument="layer_ranks")
        if self.coupling == "conv":
            if not self.monotone:
                raise ArgumentError("coupling='conv' is a monotone parametrisation of A; the "
                                    "unconstrained control is dense", argument="coupling")
            self._init_conv(int(kernel), int(channels), float(init_scale), gen, place)
        elif self.monotone:
            r = int(rank) if rank is not None else d
            if self.pattern == "layered":
                mask = self.layout.layered_rows(r, layer_ranks)
                # every column starts with norm ~ init_scale, as in the full pattern,
                # though only the row blocks of its (one or two) layer pairs reach it
                reach = mask.sum(0, keepdim=True).to(torch.get_default_dtype())
                A = (torch.randn(mask.shape, generator=gen, device="cpu") * mask
                     * (float(init_scale) / reach.sqrt()))
                # a buffer, so it follows the model's device; not saved (it is derived
                # from the layout and the row split, which the constructor rebuilds)
                self.register_buffer("a_mask", mask.to(place["dtype"]).to(place["device"]),
                                     persistent=False)
            else:
                A = torch.randn(r, d, generator=gen, device="cpu") * (
                    float(init_scale) / math.sqrt(r))
            self.A = nn.Parameter(A.to(**place))
        else:
            W = torch.randn(d, d, generator=gen, device="cpu") * (float(init_scale) / math.sqrt(d))
            if self.pattern == "layered":  # entries outside the layers never enter Phi
                W = W * self.layout.layer_mask("cpu")
            self.W = nn.Parameter(W.to(**place))
        self.b = nn.Parameter(torch.zeros(d))
        # Readout temperatures (the reference's tau, clftau): the loss scores
        # softmax(tau^2 (Phi q* + b)). The margin bounds how strong the couplings, and so
        # the mean-field logits, can be; without a learned scale the pixel term's gradient
        # is too weak beside the label's and the couplings learn the label alone.
        if readout is not None and not float(readout) >= 0.0:
            raise ArgumentError(f"monotone_dbm: readout must be >= 0 (the pixels' initial "
                                f"tau^2; 0 fixes tau = 1), got {readout}", argument="readout")
        if readout and not float(label_readout) > 0.0:
            # tau_label = 0 would be a stationary point of tau^2: the label logits stay 0
            raise ArgumentError(f"monotone_dbm: label_readout must be > 0 (the label's "
                                f"initial tau^2), got {label_readout}",
                                argument="label_readout")
        self.readout = float(readout) if readout else None  # 0 / None: tau = 1, fixed
        if self.readout is not None:
            _, _, n_v, _ = self.layout.segment("visible")
            self.tau_visible = nn.Parameter(torch.full((n_v, 1), math.sqrt(self.readout)))
            self.tau_label = nn.Parameter(torch.full((), math.sqrt(float(label_readout))))
        # Evidence gain (learned, one per visible unit): a shown pixel enters the field
        # of the free units as gamma_i x_i instead of x_i. The clamped values only shift
        # the free units' bias, so the free energy's Hessian in the free units, and with
        # it the uniqueness of the fixed point, does not depend on gamma (see
        # MonotoneDBM.problem); the cap then bounds only the couplings among free units.
        if evidence_gain is not None and not math.isfinite(float(evidence_gain)):
            raise ArgumentError(f"monotone_dbm: evidence_gain must be a finite number, got "
                                f"{evidence_gain}", argument="evidence_gain")
        if evidence_gain is not None:
            _, _, n_v, _ = self.layout.segment("visible")
            self.gain_visible = nn.Parameter(torch.full((n_v, 1), float(evidence_gain)))
        self.check_margin()

    def _init_conv(self, kernel: int, channels: int, init_scale: float, gen, place) -> None:
        """Convolutional ``A``: row blocks of ``channels`` feature maps on the visible
        grid, one block for every group (``pattern="full"``) or one per pair of
        consecutive groups (``pattern="layered"``: then ``A^T A``, and ``Phi``, couple only
        within a group and between consecutive groups, as for the layered dense ``A``).
        In its block(s) every grid group (the visible units and each hidden tier of the
        same size) enters through its own ``kernel x kernel`` convolution, the label
        through dense columns."""
        if kernel % 2 != 1:
            raise ArgumentError(f"kernel must be odd, got {kernel}", argument="kernel")
        _, _, n_v, _ = self.layout.segment("visible")
        side = int(round(math.sqrt(n_v)))
        if side * side != n_v:
            raise ValueError(f"coupling='conv' needs a square visible grid; got {n_v} units")
        self.side, self.channels = side, channels
        names = [name for name, _, _, _ in self.layout.segments]
        if self.pattern == "layered":
            if len(names) < 2:
                raise ArgumentError("pattern='layered' needs at least two groups (visible "
                                    "and a hidden tier or the label)", argument="pattern")
            self.conv_blocks = [tuple(names[j:j + 2]) for j in range(len(names) - 1)]
        else:
            self.conv_blocks = [tuple(names)]
        r = channels * n_v
        self.conv = nn.ParameterList()
        for block in self.conv_blocks:
            for name, _, n, k in self.layout.segments:
                if name not in block:
                    continue
                # every column of A (one per one-hot state) starts with norm ~ init_scale,
                # as dense, shared among the row blocks that reach it
                reach = math.sqrt(sum(name in b for b in self.conv_blocks))
                if name == "label":
                    a = torch.randn(r, k, generator=gen, device="cpu") * (
                        init_scale / math.sqrt(r) / reach)
                    self.A_label = nn.Parameter(a.to(**place))
                    continue
                if n != n_v:
                    raise ValueError(f"coupling='conv': hidden tier {name} needs {n_v} "
                                     f"units (one per pixel), got {n}")
                w = torch.randn(channels, k, kernel, kernel, generator=gen, device="cpu")
                self.conv.append(nn.Parameter(
                    (w * init_scale / math.sqrt(channels * kernel ** 2) / reach).to(**place)))

    # ---- structure ----
    def a_matrix(self) -> torch.Tensor:
        """``A`` (monotone model): the dense parameter (masked to its row blocks when
        layered), or the convolutional row blocks: in each, the convolution operators of
        its grid groups beside the label's dense columns, zero on the other groups'
        columns; layout column order."""
        if self.coupling == "dense":
            # the fixed row-block mask: entries outside it never enter Phi, get no gradient
            return self.A * self.a_mask if hasattr(self, "a_mask") else self.A
        rows, convs = [], iter(self.conv)
        r = self.channels * self.side ** 2
        for block in self.conv_blocks:
            cols = []
            for name, _, n, k in self.layout.segments:
                if name not in block:  # outside the row block: never enters Phi
                    cols.append(self.b.new_zeros(r, n * k))
                elif name == "label":
                    cols.append(self.A_label)
                else:
                    cols.append(conv_operator(next(convs), self.side, k))
            rows.append(torch.cat(cols, dim=1))
        return torch.cat(rows, dim=0)

    def phi(self) -> torch.Tensor:
        if self.monotone:
            return monotone_phi(self.a_matrix(), self.layout, self.margin, self.cap)[0]
        return free_phi(self.W, self.layout, self.pattern)

    def check_margin(self, exact: bool = True) -> float:
        """``lambda_min(I - Phi)`` at ``cap = 1``, ``cap - lambda_max(P Phi P)`` on the
        tangent space at ``cap > 1``; raises when the monotone model violates the margin."""
        with torch.no_grad():
            Phi = self.phi()
            if not exact:
                lam = math.nan
            elif self.cap == 1.0:
                eye = torch.eye(Phi.shape[0], dtype=Phi.dtype, device=Phi.device)
                lam = float(torch.linalg.eigvalsh(eye - Phi)[0])
            else:
                lam = self.cap - lambda_max_tangent(Phi, self.layout)
        if self.monotone and lam < self.margin - 1e-5:
            what = "I - Phi" if self.cap == 1.0 else f"{self.cap:g} I - P Phi P on T"
            raise RuntimeError(f"monotone DBM margin violated: lambda_min({what}) = {lam:.3g}"
                               f" < m = {self.margin}")
        return lam

    # ---- data ----
    def clamp(self, visible: torch.Tensor, label: torch.Tensor | None = None):
        """``(mask [B, d], one-hot values [B, d])`` for observed visible states and labels."""
        lay = self.layout
        B = visible.shape[0]
        dev = self.b.device
        mask = torch.zeros(B, lay.d, dtype=torch.bool, device=dev)
        val = torch.zeros(B, lay.d, dtype=self.b.dtype, device=dev)
        for name, x in (("visible", visible), ("label", label)):
            if x is None:
                continue
            _, off, n, k = lay.segment(name)
            x = _units(torch.as_tensor(x, device=dev), B, n, k, name)
            obs = x >= 0
            oh = torch.nn.functional.one_hot(x.clamp_min(0), k).to(val.dtype)
            oh = oh * obs[..., None]
            mask[:, off:off + n * k] = obs.repeat_interleave(k, dim=1)
            val[:, off:off + n * k] = oh.reshape(B, n * k)
        return mask, val

    def problem(self, visible, label=None) -> Problem:
        """The batch's mean-field problem. With an evidence gain ``gamma`` the shown
        pixels ``x_C`` act on the free units ``F`` as ``gamma ⊙ x_C``: the bias becomes
        ``b + Phi_{., C}((gamma - 1) ⊙ x_C)`` (``[B, d]``), so the fixed point solves
        ``q_F = softmax(Phi_FF q_F + Phi_FC (gamma ⊙ x_C) + b_F)``. The free energy in
        ``q_F`` has the Hessian of ``gamma = 1`` (a bias is linear), and
        ``P_F Phi_FF P_F`` is a principal submatrix of ``P Phi P``, so its top eigenvalue
        is within the cap by interlacing: one fixed point for every clamping and every
        ``gamma`` (METHODS §5; construct page, "Evidence gain")."""
        mask, val = self.clamp(visible, label)
        Phi, b = self.phi(), self.b
        if hasattr(self, "gain_visible"):
            _, off, n, k = self.layout.segment("visible")
            B = val.shape[0]
            # val is zero off the clamped coordinates: only shown pixels are rescaled
            ev = ((self.gain_visible - 1.0) * val[:, off:off + n * k].reshape(B, n, k))
            b = b + ev.reshape(B, n * k) @ Phi[off:off + n * k]
        return Problem(Phi, b, self.layout, mask, val, self.cap)

    # ---- inference ----
    def infer(self, visible, label=None, *, solver: str | None = None, z0=None,
              grad: bool | None = None, **opts):
        """The mean-field fixed point for this clamping. With gradients enabled the
        monotone model differentiates implicitly; the control unrolls its iterations."""
        p = self.problem(visible, label)
        solver = solver or self.solver
        o = {"tol": self.tol, "max_iter": self.max_iter}
        if solver == "fb":
            o.update(alpha=self.alpha, anderson=self.anderson)
        o.update(opts)
        if z0 is None:
            z0 = p.prox(p.b.detach().expand(visible.shape[0], -1), 1.0)
        grad = torch.is_grad_enabled() if grad is None else grad
        if not grad:
            with torch.no_grad():
                z, info = solve(_detached(p), z0, solver, **o)
            return z, info, p
        if not self.monotone:
            steps = o.get("max_iter", self.max_iter)
            z = unrolled_fixed_point(p, z0, steps=steps)
            # the residual of the last unrolled iterate (a separate no-grad solve for it
            # would double the control's cost: a bipartite RBM needs all 50 steps)
            with torch.no_grad():
                fz = p.mean_field(z.detach())
                res = (fz - z.detach()).norm(dim=1) / fz.norm(dim=1).clamp_min(1e-12)
            return z, {"iters": steps, "res": res, "history": [], "stalled": False}, p
        with torch.no_grad():
            z, info = solve(_detached(p), z0, solver, **o)
        # the adjoint contracts at the forward map's rate: use the step the solve ended at
        alpha = info.get("alpha", o.get("alpha", self.alpha))
        return implicit_fixed_point(p, z, alpha=alpha), info, p

    def logits(self, z: torch.Tensor, p: Problem, name: str) -> torch.Tensor:
        """``Phi z + b`` over the units of group ``name``: ``[B, n, k]``."""
        _, off, n, k = self.layout.segment(name)
        return p.field(z)[:, off:off + n * k].reshape(z.shape[0], n, k)

    def readout_logits(self, z: torch.Tensor, p: Problem, name: str) -> torch.Tensor:
        """``tau^2 (Phi z + b)`` for ``visible`` (one learned ``tau`` per unit) or ``label``
        (one scalar): the logits the loss scores (the reference's readout temperatures).
        At the fixed point an unclamped unit's ``q*`` is ``softmax(Phi q* + b)``, so the
        readout keeps its most probable state; only the confidence is rescaled."""
        lg = self.logits(z, p, name)
        if self.readout is None or name not in ("visible", "label"):
            return lg
        tau = self.tau_visible if name == "visible" else self.tau_label
        return tau.square() * lg

    def training_mask(self, visible: torch.Tensor, generator=None) -> torch.Tensor:
        """Which of the given (non-missing) pixels are shown as inputs: a random fraction
        ``observed``, or everything outside one random square patch. With ``observed =
        (lo, hi)`` each image first draws its own fraction ``rho ~ U(lo, hi)``, so one
        model is trained on every clamping density it will be asked to serve."""
        frac = self.observed
        if isinstance(frac, tuple):
            gdev = generator.device if generator is not None else torch.device("cpu")
            u = torch.rand(visible.shape[0], generator=generator, device=gdev)
            frac = frac[0] + (frac[1] - frac[0]) * u
        return make_mask(visible.shape, frac, self.mask, generator=generator,
                         device=visible.device) & (_states(visible, visible.device) >= 0)

    def loss(self, visible, label=None, shown=None, generator=None, **opts):
        """``0.5 CE(hidden pixels) + 0.5 CE(label)`` on the readout logits
        ``tau^2 (Phi q* + b)`` (METHODS §5; ``tau = 1`` when ``readout=None``), with the
        pixels outside ``shown`` (default: a fresh training mask) and the label hidden."""
        x = _states(visible, self.b.device)
        if shown is None:
            shown = self.training_mask(x, generator)
        inp = torch.where(shown, x, torch.full_like(x, -1))
        z, info, p = self.infer(inp, None, **opts)
        target = (~shown) & (x >= 0)
        lv = torch.log_softmax(self.readout_logits(z, p, "visible"), -1)
        nll_v = -lv.gather(-1, x.clamp_min(0)[..., None])[..., 0]
        loss = 0.5 * (nll_v * target).sum() / target.sum().clamp_min(1)
        if label is not None and "label" in [g[0] for g in self.layout.groups]:
            y = _states(label, self.b.device).reshape(-1)
            ll = torch.log_softmax(self.readout_logits(z, p, "label")[:, 0], -1)
            loss = loss + 0.5 * torch.nn.functional.nll_loss(ll, y)
        return loss, info

    @torch.no_grad()
    def predict(self, visible, **opts):
        """``(pixel distributions [B, n_v, k], label distribution [B, k_label] or None,
        info)`` with every non-missing pixel clamped: ``softmax`` of the readout logits
        ``tau^2 (Phi q* + b)`` (what the loss is trained on; same most probable state as
        the mean-field marginal ``q*``), one-hot on the clamped pixels."""
        st = _states(visible, self.b.device)
        z, info, p = self.infer(st, None, grad=False, **opts)
        pv = torch.softmax(self.readout_logits(z, p, "visible"), -1)
        _, off, n, k = self.layout.segment("visible")
        clamped = (st >= 0).reshape(z.shape[0], n)[..., None]
        pv = torch.where(clamped, z[:, off:off + n * k].reshape(z.shape[0], n, k), pv)
        pl = None
        if "label" in [g[0] for g in self.layout.groups]:
            pl = torch.softmax(self.readout_logits(z, p, "label")[:, 0], -1)
        return pv, pl, info

    # ---- language sites ----
    @property
    def visible(self):
        self._session = _Session(self)
        return _VisibleSite(self._session)

    @property
    def label(self):
        s = getattr(self, "_session", None)
        if s is None or s.model is not self:
            raise RuntimeError("m.label is conditioned on the pixels: write 'pixels ~ "
                               "m.visible' before 'label ~ m.label'")
        return _LabelSite(s)


def _detached(p: Problem) -> Problem:
    q = Problem(p.Phi.detach(), p.b.detach(), p.layout, p.clamp_mask, p.clamp_value, p.cap)
    q._chol, q._eff = p._chol, p._eff
    return q


def _states(x, device) -> torch.Tensor:
    """Integer states with -1 for missing (NaN in real data)."""
    x = torch.as_tensor(x, device=device)
    if x.is_floating_point():
        x = torch.where(torch.isnan(x), torch.full_like(x, -1), x).round().long()
    return x.long()


def _units(x, rows: int, n: int, k: int, name: str, missing: bool = True) -> torch.Tensor:
    """The data ``x`` (as given: NaN or -1 for a missing value where ``missing``) as
    [rows, n] integer states in 0..k-1 (-1: missing), or an ArgumentError at the
    construct's ``name`` argument saying how the data disagree with it: the range reported
    is that of the given (non-missing) values, as written."""
    x = torch.as_tensor(x)
    if x.numel() != rows * n:
        per_row = x.shape[-1] if x.dim() >= 2 else x.numel()
        raise ArgumentError(f"monotone_dbm: {name} declares {n} units per row, but the data "
                            f"have {per_row} (shape {list(x.shape)})", argument=name)
    x = x.reshape(rows, n)
    gaps = torch.isnan(x) if x.is_floating_point() else torch.zeros_like(x, dtype=torch.bool)
    if missing:
        gaps = gaps | (x == -1)
    given = x[~gaps]
    states = f"states 0..{k - 1}" + (" (NaN for a missing value)" if missing else "")
    if given.numel() and x.is_floating_point() and bool((given != given.round()).any()):
        bad = float(given[given != given.round()][0])
        raise ArgumentError(f"monotone_dbm: {name} units take whole-number {states}, but the "
                            f"data hold {bad:g}", argument=name)
    if not missing and bool(gaps.any()):
        raise ArgumentError(f"monotone_dbm: {name} units take {states}; the data have a "
                            "missing value", argument=name)
    if given.numel() and (float(given.max()) > k - 1 or float(given.min()) < 0):
        lo, hi = float(given.min()), float(given.max())
        held = f"{lo:g}" if lo == hi else f"{lo:g}..{hi:g}"
        raise ArgumentError(f"monotone_dbm: {name} units take {states}, but the data hold "
                            f"{held}", argument=name)
    return torch.where(gaps, torch.full_like(x, -1), x).long()


def _check_options(*, monotone, **options) -> None:
    """The options' types, as the checker checks literals (``ppl/constructs/
    monotone_dbm.py``), for values it cannot see and for models built from Python: an
    :class:`ArgumentError` at the option for a fraction where a whole number goes
    (``rank=2.5``), a word outside the option's choices (``solver="fbb"``), or a
    ``monotone`` that is not true/false (the string "no" would read as true)."""
    from ..check.signatures import suggest
    from ..constructs import monotone_dbm as spec

    for key in spec.INTEGER_OPTIONS:
        v = options.get(key)
        if v is None:
            continue
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or v != int(v):
            raise ArgumentError(f"monotone_dbm: {key} must be a whole number, got "
                                f"{v if isinstance(v, (int, float)) else repr(v)}",
                                argument=key)
    v = options.get("rank")
    if v is not None and int(v) < 1:
        raise ArgumentError(f"monotone_dbm: rank (the rows of A) must be at least 1, got "
                            f"{int(v)}", argument="rank")
    words = {"solver": spec.SOLVERS, "coupling": spec.COUPLINGS,
             "pattern": spec.PATTERNS, "mask": spec.MASKS}
    for key, choices in words.items():
        v = options[key]
        if v not in choices:
            hint = suggest(v, choices) if isinstance(v, str) else None
            raise ArgumentError(f"monotone_dbm: {key} must be one of {', '.join(choices)}, "
                                f"got {v!r}" + (f" (did you mean '{hint}'?)" if hint else ""),
                                argument=key)
    if isinstance(monotone, torch.Tensor) and monotone.numel() == 1 \
            and monotone.dtype == torch.bool:
        monotone = bool(monotone)
    if not (isinstance(monotone, bool) or type(monotone) is int and monotone in (0, 1)):
        raise ArgumentError(f"monotone_dbm: monotone takes true or false, got {monotone!r}",
                            argument="monotone")


def _observed_option(observed) -> float | tuple[float, float]:
    """``observed`` as a fraction in ``[0, 1]`` or a range ``(lo, hi)``, ``0 <= lo <= hi
    <= 1``, of per-image fractions (training masks only)."""
    if isinstance(observed, (tuple, list)):
        if len(observed) != 2 or not 0.0 <= float(observed[0]) <= float(observed[1]) <= 1.0:
            raise ArgumentError(f"monotone_dbm: observed must be a fraction in [0, 1] or a "
                                f"range (lo, hi) with 0 <= lo <= hi <= 1, got {observed}",
                                argument="observed")
        return float(observed[0]), float(observed[1])
    if not 0.0 <= float(observed) <= 1.0:
        raise ArgumentError(f"monotone_dbm: observed must be in [0, 1], got {observed}",
                            argument="observed")
    return float(observed)


def make_mask(shape, observed: float | torch.Tensor, kind: str = "random", generator=None,
              device=None) -> torch.Tensor:
    """``[B, n]`` boolean, True = shown. ``random``: each pixel shown with probability
    ``observed``; ``patch``: a random square of side ``round(sqrt((1-observed) n))``
    hidden (images are square, ``n = side^2``). ``observed`` may be a ``[B]`` tensor of
    per-image fractions (on the generator's device)."""
    B, n = shape
    # drawn where the generator lives (a CPU one under a CUDA default device too)
    gdev = generator.device if generator is not None else torch.device("cpu")
    per_image = isinstance(observed, torch.Tensor)
    if kind == "random":
        u = torch.rand(B, n, generator=generator, device=gdev)
        return (u < (observed.to(gdev)[:, None] if per_image else observed)).to(device)
    if kind == "patch" and per_image:
        side = int(round(math.sqrt(n)))
        m = torch.ones(B, side, side, dtype=torch.bool, device=gdev)
        ps = ((1 - observed.to(torch.float64).cpu()) * n).sqrt().round().long().tolist()
        for i, p in enumerate(ps):
            if p > 0:
                r, c = torch.randint(0, side - p + 1, (2,), generator=generator, device=gdev)
                m[i, r:r + p, c:c + p] = False
        return m.reshape(B, n).to(device)
    if kind == "patch":
        side = int(round(math.sqrt(n)))
        p = int(round(math.sqrt((1 - observed) * n)))
        m = torch.ones(B, side, side, dtype=torch.bool, device=gdev)
        if p > 0:
            r = torch.randint(0, side - p + 1, (B,), generator=generator, device=gdev)
            c = torch.randint(0, side - p + 1, (B,), generator=generator, device=gdev)
            for i in range(B):
                m[i, r[i]:r[i] + p, c[i]:c[i] + p] = False
        return m.reshape(B, n).to(device)
    raise ValueError(f"mask must be 'random' or 'patch', got {kind!r}")


# ---------------------------------------------------------------------------------------
# Distributions for 'pixels ~ m.visible' and 'label ~ m.label'
class _Session:
    """One model execution: both sites share one fixed point, solved once.

    Training (the label observed or absent from the model): a random fraction
    ``observed`` of the non-missing pixels is clamped and the rest is scored. Prediction
    (the label sampled): every non-missing pixel is clamped."""

    def __init__(self, model: MonotoneDBM):
        self.model = model
        self.pixels = None
        self.pixels_site = None  # the pixels' site, when found in the trace (find_pixels)
        self.mode = "train"
        self._solved = None

    def find_pixels(self):
        if self.pixels is not None:
            return self.pixels
        from pyro.poutine.runtime import _PYRO_STACK

        for frame in reversed(_PYRO_STACK):
            trace = getattr(frame, "trace", None)
            if trace is None:
                continue
            for node in trace.nodes.values():
                fn = node.get("fn")
                while fn is not None and not isinstance(fn, _VisibleSite):
                    fn = getattr(fn, "base_dist", None)
                if fn is not None and fn.session is self and node.get("is_observed"):
                    self.pixels, self.pixels_site = node["value"], node["name"]
                    return self.pixels
        raise RuntimeError("m.label needs the pixels: observe them with 'pixels ~ m.visible' "
                           "inside a Pyro inference or Predictive run")

    def solved(self):
        x = self.find_pixels()
        if self._solved is None or self._solved[0] is not x:
            m = self.model
            _, _, n, k = m.layout.segment("visible")
            st = torch.as_tensor(x, device=m.b.device)
            try:
                st = _units(st, st.numel() // n if st.numel() % n == 0 else 1, n, k,
                            "visible")
            except ArgumentError as e:
                # first read here by 'label ~ m.label' (a label to draw): the pixels'
                # statement is at fault, where ppl.locate points by this site's name
                e.site = self.pixels_site
                raise
            shown = st >= 0 if self.mode == "predict" else m.training_mask(st)
            inp = torch.where(shown, st, torch.full_like(st, -1))
            z, info, p = m.infer(inp, None)
            self._solved = (x, st, shown, z, p)
        return self._solved


class _Site(TorchDistribution):
    arg_constraints: dict = {}
    has_enumerate_support = False

    def __init__(self, session: _Session, batch_shape=()):
        self.session = session
        super().__init__(torch.Size(batch_shape), torch.Size(), validate_args=False)

    def expand(self, batch_shape, _instance=None):
        return type(self)(self.session, batch_shape)


class _VisibleSite(_Site):
    """Scores the hidden non-missing pixels: ``0.5 log softmax(tau^2 (Phi q* + b))_i[x_i]``
    per pixel (the reference training loss, METHODS §5); clamped and missing pixels
    contribute 0."""

    support = torch.distributions.constraints.real

    def log_prob(self, value):
        s = self.session
        s.pixels = value
        _, st, shown, z, p = s.solved()
        m = s.model
        lv = torch.log_softmax(m.readout_logits(z, p, "visible"), -1)
        ll = lv.gather(-1, st.clamp_min(0)[..., None])[..., 0]
        target = (~shown) & (st >= 0)
        out = 0.5 * torch.where(target, ll, torch.zeros_like(ll))
        return out.reshape(value.shape)

    def sample(self, sample_shape=()):
        raise NotImplementedError("pixels are data: pass them with NaN for missing values; "
                                  "imputations come from MonotoneDBM.predict")


class _LabelSite(_Site):
    """``0.5 log softmax(tau^2 (Phi q* + b))[label]`` when observed; a draw from that
    readout distribution, given every non-missing pixel, when sampled."""

    support = torch.distributions.constraints.nonnegative_integer

    def _probs(self):
        _, _, _, z, p = self.session.solved()
        return torch.softmax(self.session.model.readout_logits(z, p, "label")[:, 0], -1)

    def log_prob(self, value):
        pr = self._probs()
        # an observed label has no missing value (-1 or NaN would index out of range)
        y = _units(torch.as_tensor(value, device=pr.device), pr.shape[0], 1, pr.shape[-1],
                   "label", missing=False)[:, 0]
        return 0.5 * torch.log(pr.gather(-1, y[:, None])[:, 0]).reshape(value.shape)

    def sample(self, sample_shape=()):
        self.session.mode = "predict"
        with torch.no_grad():
            pr = self._probs()
        draw = torch.distributions.Categorical(probs=pr).sample(sample_shape)
        return draw.reshape(torch.Size(sample_shape) + self.batch_shape)
