"""Monotone DBMs (METHODS.md §5): structure and margin, the alpha-prox and its Jacobian,
uniqueness of the mean-field fixed point under random starts, masks and label clamping,
implicit against unrolled gradients, the period-2 oscillation of the unconstrained
control, and the language surface end to end."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ppl.runtime import monotone_dbm as M

ROOT = Path(__file__).resolve().parent.parent


# every test in float64 (conftest's fixture restores the dtype after; a test may set float32)
pytestmark = pytest.mark.usefixtures("float64")


def _tiny(seed=0, **kw):
    kw.setdefault("cap", 1.0)  # Feng et al.'s class; the cap-2 tests ask for it
    m = M.MonotoneDBM(visible=M.units(5, 3), hidden=[M.units(4, 2), M.units(3, 3)],
                      label=M.units(1, 4), margin=0.01, seed=seed, **kw)
    with torch.no_grad():
        m.b.normal_(generator=torch.Generator().manual_seed(seed + 1))
    return m


def _data(B=6, seed=2):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 3, (B, 5), generator=g)
    hide = torch.rand(B, 5, generator=g) < 0.5
    return torch.where(hide, torch.full_like(x, -1), x), torch.randint(0, 4, (B,), generator=g)


# ---- structure -----------------------------------------------------------------------
@pytest.mark.parametrize("init_scale", [0.3, 1.0, 30.0])
def test_phi_symmetric_hollow_margin(init_scale):
    m = _tiny(init_scale=init_scale)
    Phi = m.phi().detach()
    assert torch.allclose(Phi, Phi.T, atol=1e-12)
    assert Phi[m.layout.block_mask()].abs().max() == 0
    lam = torch.linalg.eigvalsh(torch.eye(Phi.shape[0]) - Phi)[0]
    assert lam >= 0.01 - 1e-10
    assert m.check_margin() == pytest.approx(float(lam))
    # the global scale binds (s < 1) for large A: the bound is then the closest one
    _, s = M.monotone_phi(m.A.detach(), m.layout, 0.01)
    if init_scale == 30.0:
        assert s < 1


def test_monotone_class_is_every_hollow_phi_below_the_cap():
    """With dense A of rank d the parametrisation reaches every symmetric block-hollow Phi
    with lambda_max(Phi) <= 1 - m: A = (c I - Phi)^(1/2), c = 1 - m, has D = c I and s = 1."""
    m = _tiny()
    lay, d = m.layout, m.layout.d
    g = torch.Generator().manual_seed(9)
    W = torch.randn(d, d, generator=g, dtype=torch.float64)
    Phi = (0.5 * (W + W.T)).masked_fill(lay.block_mask(), 0.0)
    Phi = Phi * (0.99 / torch.linalg.eigvalsh(Phi)[-1])  # lambda_max exactly 1 - m
    e, U = torch.linalg.eigh(0.99 * torch.eye(d, dtype=torch.float64) - Phi)
    A = (U * e.clamp_min(0).sqrt()) @ U.T
    out, s = M.monotone_phi(A, lay, 0.01)
    assert float(s) == pytest.approx(1.0, abs=1e-10)
    assert torch.allclose(out, Phi, atol=1e-10)
    # and nothing beyond the cap: every s (D - A^T A) has lambda_max <= 1 - m
    assert torch.linalg.eigvalsh(M.monotone_phi(W, lay, 0.01)[0])[-1] <= 0.99 + 1e-10


def test_margin_holds_after_updates():
    m = _tiny()
    opt = torch.optim.Adam(m.parameters(), lr=0.3)
    x, y = _data()
    for _ in range(5):
        opt.zero_grad()
        loss, _ = m.loss(torch.where(x < 0, 0, x), y, shown=x >= 0, solver="pr", tol=1e-8,
                         max_iter=500)
        loss.backward()
        opt.step()
        assert m.check_margin() >= 0.01 - 1e-10


def test_margin_violation_is_reported():
    m = _tiny(monotone=False, init_scale=20.0)
    free = m.phi().detach()
    assert m.check_margin() < 0  # the control has no margin, and is allowed not to
    mono = _tiny()
    mono.phi = lambda: free  # a coupling that escaped the parametrisation
    with pytest.raises(RuntimeError, match="margin violated"):
        mono.check_margin()


# ---- the alpha-prox ----------------------------------------------------------------
@pytest.mark.parametrize("alpha", [1.0, 0.5, 0.125, 0.03])
def test_prox_matches_constrained_optimiser(alpha):
    from scipy.optimize import minimize

    g = torch.Generator().manual_seed(0)
    y = torch.randn(4, 5, generator=g) * 2
    q = M.prox_softmax(y, alpha)
    for i in range(4):
        yi = y[i].numpy()

        def obj(v, yi=yi):
            v = np.clip(v, 1e-300, None)
            return 0.5 * ((v - yi) ** 2).sum() + alpha * ((v * np.log(v)).sum()
                                                         - 0.5 * (v ** 2).sum())

        r = minimize(obj, np.full(5, 0.2), method="SLSQP", bounds=[(0, 1)] * 5,
                     constraints=[{"type": "eq", "fun": lambda v: v.sum() - 1}],
                     options={"ftol": 1e-14, "maxiter": 500})
        assert np.abs(r.x - q[i].numpy()).max() < 2e-5
    if alpha == 1.0:
        assert torch.allclose(q, torch.softmax(y, -1), atol=1e-14)
    # the Lambert-W closed form with the solved multiplier
    if alpha < 1:
        from scipy.special import lambertw

        nu = (y - alpha - (1 - alpha) * q - alpha * torch.log(q))[:, :1].numpy()
        arg = (1 - alpha) / alpha * np.exp((y.numpy() - nu) / alpha - 1)
        qw = alpha / (1 - alpha) * lambertw(arg, 0).real
        assert np.abs(qw - q.numpy()).max() < 1e-10


@pytest.mark.parametrize("alpha", [1.0, 0.3, 0.125])
def test_prox_jacobian(alpha):
    y = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    J = torch.autograd.functional.jacobian(lambda v: M.prox_softmax(v, alpha), y[0])
    Jc = M.prox_softmax_jacobian(M.prox_softmax(y[0], alpha), alpha)
    assert torch.allclose(J, Jc, atol=1e-12)
    # central finite differences of the forward solve
    eps = 1e-6
    Jfd = torch.stack([(M.prox_softmax(y[0] + eps * e, alpha)
                        - M.prox_softmax(y[0] - eps * e, alpha)) / (2 * eps)
                       for e in torch.eye(4)], 1)
    assert torch.allclose(Jfd, Jc, atol=1e-7)
    assert torch.autograd.gradcheck(lambda v: M.prox_softmax(v, alpha),
                                    (y.clone().requires_grad_(),))


@pytest.mark.parametrize("alpha", [1.0, 0.4, 0.125])
def test_prox_sigmoid(alpha):
    x = torch.linspace(-6, 6, 13)
    p = M.prox_sigmoid(x, alpha)
    q = M.prox_softmax(torch.stack([x, torch.zeros_like(x)], -1), alpha)[:, 0]
    assert torch.allclose(p, q, atol=1e-11)
    if alpha == 1.0:
        assert torch.allclose(p, torch.sigmoid(x), atol=1e-15)
    eps = 1e-6
    fd = (M.prox_sigmoid(x + eps, alpha) - M.prox_sigmoid(x - eps, alpha)) / (2 * eps)
    xr = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(M.prox_sigmoid(xr, alpha).sum(), xr)
    assert torch.allclose(g, fd, atol=1e-8)
    assert torch.allclose(g, M.prox_sigmoid_derivative(p, alpha), atol=1e-15)


# ---- uniqueness and the fixed-point identity -----------------------------------------
SOLVES = [("fb", {"alpha": 0.125, "anderson": 0}), ("fb", {"alpha": 0.125, "anderson": 5}),
          ("fb", {"alpha": 1.0, "anderson": 5}), ("pr", {"alpha": 1.0}),
          ("pr", {"alpha": 0.3}), ("mf", {})]


def _fixed_point_from_starts(p1, solves, seed: int, R: int = 5) -> torch.Tensor:
    """Solve ``p1`` from ``R`` random starts with each solver of ``solves`` (all starts
    solved together: rows are independent problems); asserts every start and every solver
    reach the same point, and returns it."""
    B = p1.clamp_mask.shape[0]
    b = p1.b.repeat(R, 1) if p1.b.dim() == 2 else p1.b  # per-problem biases (evidence gain)
    p = M.Problem(p1.Phi, b, p1.layout, p1.clamp_mask.repeat(R, 1),
                  p1.clamp_value.repeat(R, 1), p1.cap)
    g = torch.Generator().manual_seed(seed)
    ref = None
    for solver, o in solves:
        z, info = M.solve(p, p.random_start(R * B, g), solver, tol=1e-12, max_iter=3000, **o)
        assert float(p.residual(z).max()) < 1e-11
        z = z.view(R, B, -1)
        assert (z - z[0]).abs().max() < 1e-8, (solver, o)  # start-independent
        if ref is None:
            ref = z[0]
        assert (z - ref).abs().max() < 1e-8, (solver, o)   # solver-independent
    return ref


@pytest.mark.parametrize("clamp_label", [False, True])
def test_unique_fixed_point_all_solvers(clamp_label):
    m = _tiny(init_scale=5.0)
    x, y = _data()
    p = M._detached(m.problem(x, y if clamp_label else None))
    ref = _fixed_point_from_starts(p, SOLVES, seed=7)
    # q* = softmax(Phi q* + b) on the free units; observed units keep their one-hot values
    assert torch.allclose(ref, p.mean_field(ref), atol=1e-10)
    mask, val = p.clamp_mask, p.clamp_value
    assert torch.equal(ref[mask], val[mask])
    _, off, n, k = m.layout.segment("visible")
    free = ~mask
    raw = torch.cat([torch.softmax(s.reshape(len(x), -1, kk), -1).reshape(len(x), -1)
                     for s, kk in _segments(p.field(ref), m.layout)], 1)
    assert torch.allclose(ref[free], raw[free], atol=1e-10)
    if clamp_label:
        _, off, _, k = m.layout.segment("label")
        assert torch.equal(ref[:, off:off + k].argmax(1), y)


def _segments(v, layout):
    for _, off, n, k in layout.segments:
        yield v[:, off:off + n * k], k


def test_linear_convergence_of_fb():
    m = _tiny(init_scale=5.0)
    x, _ = _data()
    p = M._detached(m.problem(x))
    _, info = M.solve(p, p.random_start(6), "fb", alpha=0.5, anderson=0, tol=1e-12,
                      max_iter=3000)
    h = np.array(info["history"])
    ratios = h[1:] / h[:-1]
    assert ratios[5:].max() < 1.0  # monotone decrease after a short transient
    # a linear (geometric) rate: log-residual is close to a line
    k = np.arange(len(h))[5:]
    slope, icept = np.polyfit(k, np.log(h[5:]), 1)
    assert slope < 0
    assert np.abs(np.log(h[5:]) - (slope * k + icept)).max() < 3.0


def test_alpha_halving_when_fb_stalls():
    # five binary units with aligned columns of A: lambda_max(I - Phi) ~ 5 > 2, so the
    # undamped step (alpha = 1, plain mean-field) oscillates and alpha must be halved
    lay = M.Layout([("visible", M.Units(5, 2))])
    A = 3.0 * torch.tensor([[1.0, -1.0] * 5])
    Phi, _ = M.monotone_phi(A, lay, 0.01)
    p = M.Problem(Phi, 0.1 * torch.arange(10.0), lay)
    assert float(torch.linalg.eigvalsh(torch.eye(10) - Phi)[-1]) > 4
    z0 = p.random_start(4, torch.Generator().manual_seed(0))
    _, mf = M.solve(p, z0, "mf", tol=1e-10, max_iter=300)
    assert float(mf["res"].max()) > 1e-3  # plain mean-field does not converge
    z, info = M.solve(p, z0, "fb", alpha=1.0, anderson=0, tol=1e-10, max_iter=3000,
                      stall=0.99, window=20)
    assert float(p.residual(z).max()) < 1e-10
    assert info["alpha"] < 1.0
    zr, _ = M.solve(p, z0, "pr", tol=1e-12, max_iter=3000)
    assert (z - zr).abs().max() < 1e-8


# ---- gradients ---------------------------------------------------------------------
def _loss(m, z, p, y):
    lv = torch.log_softmax(m.logits(z, p, "visible"), -1)
    ll = torch.log_softmax(m.logits(z, p, "label")[:, 0], -1)
    return -lv[..., 1].sum() - ll.gather(-1, y[:, None]).sum()


@pytest.mark.parametrize("cap, unroll_alpha, steps, alpha", [(1.0, 0.5, 400, 0.5),
                                                           (2.0, 0.4, 600, 0.25)])
def test_implicit_vs_unrolled_gradients(cap, unroll_alpha, steps, alpha):
    """The implicit adjoint through the FB map (both its iterative and its direct solve)
    equals backpropagation through unrolled FB steps (unrolled once, the costly part);
    at cap 2 (lambda_max(P Phi P) = 1.5 here, beyond Feng et al.'s cap) both use the
    c = 2 split."""
    m = _tiny(init_scale=3.0, cap=cap)
    if cap == 2.0:
        assert M.lambda_max_tangent(m.phi().detach(), m.layout) > 1.4
    x, y = _data()
    grads = {}
    for mode in ("unrolled", False, True):  # then implicit with direct=False, True
        m.zero_grad()
        p = m.problem(x)
        z0 = p.prox(p.b.detach().expand(len(x), -1), 1.0)
        if mode == "unrolled":
            z = M.unrolled_fixed_point(p, z0, alpha=unroll_alpha, steps=steps)
        else:
            with torch.no_grad():
                zs, _ = M.solve(M._detached(p), z0, "pr", tol=1e-13, max_iter=2000)
            z = M.implicit_fixed_point(p, zs, alpha=alpha, tol=1e-12, max_iter=3000,
                                       direct=mode)
        _loss(m, z, p, y).backward()
        grads[mode] = (m.A.grad.clone(), m.b.grad.clone())
    ua, ub = grads["unrolled"]
    assert ub.abs().max() > 0.1
    for direct in (False, True):
        ga, gb = grads[direct]
        assert torch.allclose(ga, ua, atol=1e-9), direct
        assert torch.allclose(gb, ub, atol=1e-9), direct


def _loss_gradient_matches_fd(m, entries, eps: float = 1e-6) -> None:
    """The model loss's gradient (on ``_data()``, the pixels outside its mask scored) at
    each ``(parameter, index)`` of ``entries`` against central differences."""
    x, y = _data()
    shown = x >= 0
    xf = torch.where(shown, x, 1)
    m.zero_grad()
    loss, _ = m.loss(xf, y, shown=shown)
    loss.backward()
    for par, idx in entries:
        g = float(par.grad[idx])
        assert g == pytest.approx(_loss_difference(m, par, idx, xf, y, shown, eps), abs=1e-7)


def test_model_loss_gradient_matches_finite_differences():
    m = _tiny(init_scale=3.0, tol=1e-12, max_iter=3000)
    m.solver = "pr"
    _loss_gradient_matches_fd(m, [(m.b, 3)])


# ---- the unconstrained control -------------------------------------------------------
def test_unconstrained_mean_field_oscillates_monotone_does_not():
    # two binary units that want to agree, strongly: parallel mean-field flips both each
    # step from a disagreeing start (period 2); the monotone model converges from anywhere
    lay = M.Layout([("visible", M.Units(2, 2))])
    w = 4.0
    Phi = torch.zeros(4, 4)
    Phi[0:2, 2:4] = w * torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    Phi[2:4, 0:2] = Phi[0:2, 2:4].T
    p = M.Problem(Phi, torch.zeros(4), lay)
    z = torch.tensor([[0.9, 0.1, 0.1, 0.9]])
    traj = [z]
    for _ in range(60):
        traj.append(p.mean_field(traj[-1]))
    a, b, c = traj[-3], traj[-2], traj[-1]
    assert torch.allclose(a, c, atol=1e-9)           # period 2
    assert (a - b).abs().max() > 0.9                 # and not a fixed point
    _, info = M.solve(p, z, "mf", tol=1e-6, max_iter=200)
    assert float(info["res"].max()) > 0.5            # never converges
    # start dependence: symmetric-breaking starts reach different fixed points
    z1, _ = M.solve(p, torch.tensor([[0.9, 0.1, 0.9, 0.1]]), "mf", tol=1e-12, max_iter=500)
    z2, _ = M.solve(p, torch.tensor([[0.1, 0.9, 0.1, 0.9]]), "mf", tol=1e-12, max_iter=500)
    assert (z1 - z2).abs().max() > 0.9
    # the monotone parametrisation of the same coupling pattern: unique, from every start
    A = torch.tensor([[1.0, -1.0, -1.0, 1.0]]) * 3.0
    Pm, s = M.monotone_phi(A, lay, 0.01)
    pm = M.Problem(Pm, torch.zeros(4), lay)
    zs = [M.solve(pm, st, "mf", tol=1e-12, max_iter=2000)[0] for st in
          (z, torch.tensor([[0.9, 0.1, 0.9, 0.1]]), torch.tensor([[0.1, 0.9, 0.1, 0.9]]))]
    for zz in zs:
        assert (zz - zs[0]).abs().max() < 1e-8


def test_control_model_runs_unrolled():
    m = _tiny(monotone=False, init_scale=0.5)
    x, y = _data()
    loss, info = m.loss(torch.where(x < 0, 0, x), y, shown=x >= 0)
    loss.backward()
    assert m.W.grad.abs().max() > 0
    Phi = m.phi().detach()
    assert torch.allclose(Phi, Phi.T) and Phi[m.layout.block_mask()].abs().max() == 0


# ---- the plain RBM baseline (pattern="layered") --------------------------------------
def _blocks(m, Phi):
    """``{(group, group): block}`` of ``Phi`` by the layout's unit groups."""
    segs = {name: slice(off, off + n * k) for name, off, n, k in m.layout.segments}
    return {(a, b): Phi[sa, sb] for a, sa in segs.items() for b, sb in segs.items()}


@pytest.mark.parametrize("tiers", [1, 2])
def test_rbm_couples_consecutive_layers_only(tiers):
    hidden = [M.units(4, 2), M.units(3, 3)][:tiers]
    m = M.MonotoneDBM(visible=M.units(5, 3), hidden=hidden, label=M.units(1, 4),
                      monotone=False, pattern="layered", init_scale=0.7, seed=0)
    order = [g[0] for g in m.layout.groups]  # visible, hidden0[, hidden1], label
    x, y = _data()
    loss, _ = m.loss(torch.where(x < 0, 0, x), y, shown=x >= 0)
    loss.backward()
    Phi = m.phi().detach()
    assert torch.allclose(Phi, Phi.T)
    for (a, b), blk in _blocks(m, Phi).items():
        if abs(order.index(a) - order.index(b)) == 1:
            assert blk.abs().min() > 0, (a, b)  # every entry of a layer pair is free
        else:  # intra-layer (visible-visible, hidden-hidden, ...) and skipped layers
            assert blk.abs().max() == 0, (a, b)
    # no gradient, hence no Adam step, can reach the entries outside the layers
    for (a, b), blk in _blocks(m, m.W.grad).items():
        if abs(order.index(a) - order.index(b)) != 1:
            assert blk.abs().max() == 0
    if tiers == 1:  # the RBM with its label on the visible side: no label-visible block
        assert _blocks(m, Phi)[("visible", "label")].abs().max() == 0
    # the monotone layered A: dense or convolutional row blocks (test_layered_conv_*)
    mc = M.MonotoneDBM(visible=M.units(16, 2), hidden=[M.units(16, 2)], pattern="layered",
                       coupling="conv")
    assert mc.conv_blocks == [("visible", "hidden0")]


# ---- the layered monotone model (pattern="layered", monotone=true) -------------------
def _layered(init_scale=1.0, seed=0, **kw):
    return _tiny(seed=seed, pattern="layered", init_scale=init_scale, **kw)


@pytest.mark.parametrize("init_scale", [1.0, 30.0])
def test_layered_monotone_phi_structure_and_margin(init_scale):
    m = _layered(init_scale)
    order = [g[0] for g in m.layout.groups]  # visible, hidden0, hidden1, label
    Phi = m.phi().detach()
    assert torch.allclose(Phi, Phi.T, atol=1e-12)
    assert Phi[m.layout.block_mask()].abs().max() == 0
    lam = float(torch.linalg.eigvalsh(torch.eye(Phi.shape[0]) - Phi)[0])
    assert lam >= 0.01 - 1e-10 and m.check_margin() == pytest.approx(lam)
    if init_scale == 30.0:  # the global scale binds, as for the full pattern
        assert M.monotone_phi(m.a_matrix().detach(), m.layout, 0.01)[1] < 1
    x, y = _data()
    loss, _ = m.loss(torch.where(x < 0, 0, x), y, shown=x >= 0, solver="pr",
                     tol=1e-10, max_iter=2000)
    loss.backward()
    for (a, b), blk in _blocks(m, Phi).items():
        gap = abs(order.index(a) - order.index(b))
        if gap > 1:  # skipped layers and visible-label: exactly zero
            assert blk.abs().max() == 0, (a, b)
        elif (a, b) != ("label", "label"):  # the one label unit's block is hollow
            # within a group (off the unit blocks) and consecutive groups: coupled
            assert blk.abs().max() > 1e-3, (a, b)
    # the gradient of A lives on the row-block mask only, and is nonzero there
    mask = m.a_mask.bool()
    assert m.A.grad[~mask].abs().max() == 0 and m.A.grad[mask].abs().max() > 0
    # the default row split: rank d = 36 rows in proportion to the pairs' dimensions
    # (15+8, 8+9, 9+4 = 23, 17, 13): one row each, 33 * (23, 17, 13)/53 -> 15, 12, 9
    starts = [int(r.nonzero()[0]) for r in mask]
    assert [starts.count(off) for _, off, _, _ in m.layout.segments[:3]] == [15, 12, 9]


def test_layered_monotone_stays_within_margin_and_row_options():
    m = _layered(layer_ranks=[2, 3, 4], init_scale=3.0)
    assert m.A.shape == (9, 36) and m.a_mask.sum(1).tolist() == [23] * 2 + [17] * 3 + [13] * 4
    opt = torch.optim.Adam(m.parameters(), lr=0.3)
    x, y = _data()
    for _ in range(4):
        opt.zero_grad()
        loss, _ = m.loss(torch.where(x < 0, 0, x), y, shown=x >= 0, solver="pr",
                         tol=1e-8, max_iter=500)
        loss.backward()
        opt.step()
        assert m.check_margin() >= 0.01 - 1e-10
        # Adam moves only masked-in entries: the rest keep their zero start
        assert m.A.detach()[~m.a_mask.bool()].abs().max() == 0
    with pytest.raises(ValueError, match="3 positive row counts"):
        _layered(layer_ranks=[2, 3])
    with pytest.raises(ValueError, match="layer_ranks"):
        _tiny(layer_ranks=[2, 3, 4])
    with pytest.raises(ValueError, match="two groups"):
        M.MonotoneDBM(visible=M.units(4, 2), pattern="layered")


@pytest.mark.parametrize("clamp_label", [False, True])
def test_layered_monotone_unique_fixed_point(clamp_label):
    m = _layered(init_scale=5.0)
    x, y = _data()
    p1 = M._detached(m.problem(x, y if clamp_label else None))
    ref = _fixed_point_from_starts(
        p1, [("fb", {"alpha": 0.125, "anderson": 5}), ("pr", {"alpha": 1.0})], seed=11)
    assert torch.allclose(ref, p1.mean_field(ref), atol=1e-10)
    assert torch.equal(ref[p1.clamp_mask], p1.clamp_value[p1.clamp_mask])
    if clamp_label:
        _, off, _, k = m.layout.segment("label")
        assert torch.equal(ref[:, off:off + k].argmax(1), y)


def test_layered_monotone_implicit_gradient_matches_finite_differences():
    m = _layered(init_scale=3.0, tol=1e-12, max_iter=3000)
    m.solver = "fb"  # the implicit (adjoint) gradient of the FB fixed point
    x, y = _data()
    shown = x >= 0
    xf = torch.where(shown, x, 1)
    loss, _ = m.loss(xf, y, shown=shown)
    loss.backward()
    mask = m.a_mask.bool()
    # one entry in each row block: visible-hidden0, hidden0-hidden1, hidden1-label
    for i, j in ((0, 2), (20, 18), (35, 33)):
        assert mask[i, j]
        eps = 1e-6
        with torch.no_grad():
            m.A[i, j] += eps
            lp, _ = m.loss(xf, y, shown=shown)
            m.A[i, j] -= 2 * eps
            lm, _ = m.loss(xf, y, shown=shown)
            m.A[i, j] += eps
        fd = float(lp - lm) / (2 * eps)
        assert abs(fd) > 1e-5, (i, j)
        assert float(m.A.grad[i, j]) == pytest.approx(fd, abs=1e-7), (i, j)


def test_rbm_parallel_mean_field_oscillates_at_large_weights():
    # Phi bipartite: parallel mean-field splits into two independent alternating chains,
    # (v0, h1, v2, ...) and (h0, v1, h2, ...). With large weights the two land on
    # different fixed points of the alternating updates, so the iterates have period 2
    # and the limit depends on the start; the monotone model's does not.
    m = M.MonotoneDBM(visible=M.units(16, 2), hidden=[M.units(8, 2)], label=M.units(1, 3),
                      monotone=False, pattern="layered", init_scale=12.0, seed=3)
    g = torch.Generator().manual_seed(4)
    x = torch.randint(0, 2, (16, 16), generator=g)
    x = torch.where(torch.rand(16, 16, generator=g) < 0.6, -1, x)  # 40% observed
    p = M._detached(m.problem(x))
    z0, z0b = p.random_start(16, g), p.random_start(16, g)
    _, off, n, k = m.layout.segment("hidden0")
    h = slice(off, off + n * k)
    # the decoupling, exactly: the even iterates do not depend on the start's hidden part
    z0_mixed = z0.clone()
    z0_mixed[:, h] = z0b[:, h]
    traj, traj_mixed = [z0], [z0_mixed]
    for _ in range(300):
        traj.append(p.mean_field(traj[-1]))
        traj_mixed.append(p.mean_field(traj_mixed[-1]))
    for t in (2, 50, 300):
        assert torch.equal(traj[t][:, ~_hidden_cols(m, h)], traj_mixed[t][:, ~_hidden_cols(m, h)])
    a, b, c = traj[-3], traj[-2], traj[-1]
    assert (a - c).abs().max() < 1e-9                   # period 2 (or fixed) on every problem
    swing = (b - c).abs().amax(1)
    assert int((swing > 0.5).sum()) >= 3               # and not fixed on several problems
    _, info = M.solve(p, z0, "mf", tol=1e-4, max_iter=300)
    assert float((info["res"] >= 1e-4).float().mean()) == float((swing > 1e-4).float().mean())
    # start dependence: the even chain's limit follows the start's visible part
    z1, _ = M.solve(p, z0b, "mf", tol=1e-12, max_iter=300)
    assert float((traj[-1] - z1).abs().max()) > 0.5
    # the monotone model on the same units and pixels: one fixed point from every start
    mono = M.MonotoneDBM(visible=M.units(16, 2), hidden=[M.units(8, 2)], label=M.units(1, 3),
                         init_scale=12.0, seed=3)
    pm = M._detached(mono.problem(x))
    zs = [M.solve(pm, st, "fb", alpha=0.5, anderson=5, tol=1e-10, max_iter=2000)[0]
          for st in (z0, z0b)]
    assert float((zs[0] - zs[1]).abs().max()) < 1e-7


def _hidden_cols(m, h: slice) -> torch.Tensor:
    cols = torch.zeros(m.layout.d, dtype=torch.bool)
    cols[h] = True
    return cols


# ---- masks and the language surface --------------------------------------------------
def test_masks():
    g = torch.Generator().manual_seed(0)
    r = M.make_mask((2000, 64), 0.4, "random", generator=g)
    assert abs(float(r.float().mean()) - 0.4) < 4 * (0.4 * 0.6 / (2000 * 64)) ** 0.5
    pm = M.make_mask((50, 64), 0.4, "patch", generator=g)
    side = round((0.6 * 64) ** 0.5)
    assert (pm.sum(1) == 64 - side * side).all()
    img = pm[0].reshape(8, 8)
    rows, cols = torch.where(~img)
    assert rows.max() - rows.min() + 1 == side and cols.max() - cols.min() + 1 == side


def test_masks_with_per_image_fractions():
    """``make_mask`` with a ``[B]`` tensor of fractions: each image's shown count is
    Binomial(n, rho_i) (random) or its patch side is round(sqrt((1 - rho_i) n)) (patch)."""
    g = torch.Generator().manual_seed(1)
    rho = torch.tensor([0.1, 0.9]).repeat(1000)
    r = M.make_mask((2000, 64), rho, "random", generator=g).float().mean(1)
    for f in (0.1, 0.9):  # 1000 images x 64 pixels at each fraction
        got = float(r[rho == f].mean())
        assert abs(got - f) < 4 * (f * (1 - f) / 64000) ** 0.5, (f, got)
    rho = torch.tensor([0.1, 0.4, 0.9, 1.0])
    pm = M.make_mask((4, 64), rho, "patch", generator=g)
    for i, f in enumerate(rho.tolist()):
        side = round(((1 - f) * 64) ** 0.5)  # 8, 6, 3, 0
        assert int((~pm[i]).sum()) == side * side
        if side:
            rows, cols = torch.where(~pm[i].reshape(8, 8))
            assert rows.max() - rows.min() + 1 == side and cols.max() - cols.min() + 1 == side


def test_training_mask_draws_a_fraction_per_image():
    """``observed=(lo, hi)``: each training image shows a fraction rho ~ U(lo, hi), so the
    shown fraction per image has mean (lo + hi)/2 and variance Var(rho) + E[rho(1-rho)]/n
    (0.0564 for U(0.1, 0.9), n = 64) instead of the fixed fraction's rho(1-rho)/n
    (0.00375 at 0.4); the range is validated."""
    x = torch.zeros(4000, 64, dtype=torch.long)
    g = torch.Generator().manual_seed(3)
    kw = {"visible": M.units(64, 2), "label": M.units(1, 3), "seed": 0}
    f = M.MonotoneDBM(observed=(0.1, 0.9), **kw).training_mask(x, g).double().mean(1)
    e_rho, var_rho = 0.5, 0.8 ** 2 / 12
    var = var_rho + (e_rho - (var_rho + e_rho ** 2)) / 64
    assert abs(float(f.mean()) - 0.5) < 4 * (var / 4000) ** 0.5
    # the sample variance's s.e. ~ var * sqrt(2 / N) (near-uniform, a little less)
    assert abs(float(f.var()) - var) < 4 * var * (2 / 4000) ** 0.5
    assert float(f.min()) < 0.15 and float(f.max()) > 0.85
    fixed = M.MonotoneDBM(observed=0.4, **kw).training_mask(x, g).double().mean(1)
    assert abs(float(fixed.var()) - 0.24 / 64) < 4 * 0.24 / 64 * (2 / 4000) ** 0.5
    # a degenerate range is the fixed fraction (same distribution, its own stream)
    same = M.MonotoneDBM(observed=(0.4, 0.4), **kw).training_mask(x, g).double().mean(1)
    assert abs(float(same.mean()) - 0.4) < 4 * (0.24 / 64 / 4000) ** 0.5
    for bad in ((0.9, 0.1), (0.1, 1.2), (0.2,), 1.5, -0.1):
        with pytest.raises(ValueError, match="observed must be"):
            M.MonotoneDBM(observed=bad, **kw)


def test_digits_example_end_to_end(tmp_path):
    import ppl

    torch.set_default_dtype(torch.float32)
    src = ROOT / "examples" / "mdbm_digits.bdl"
    model = ppl.load(src)
    assert "rt.monotone_dbm.MonotoneDBM" in model.source
    assert 'pyro.sample("pixels"' in model.source
    from sklearn.datasets import load_digits

    X, Y = load_digits(return_X_y=True)
    px = np.floor(X[:64] * 4 / 17)
    px[np.random.default_rng(0).random(px.shape) < 0.2] = np.nan
    fit = model.fit({"pixels": px, "label": Y[:64]}, infer="map", steps=3, lr=1e-3,
                    dtype="float32")
    assert len(fit.elbo) == 3 and np.isfinite(np.asarray(fit.elbo, dtype=float)).all()
    pred = fit.predict({"pixels": px[:8]}, num_samples=10)
    lab = pred["label"]
    assert lab.shape[-1] == 8 and int(lab.min()) >= 0 and int(lab.max()) <= 9


def test_language_sites_score_the_reference_loss():
    """'pixels ~ m.visible' and 'label ~ m.label' share one fixed point: their log
    densities are -0.5 CE of the held-out pixels and -0.5 CE of the labels (summed, on the
    readout logits tau^2 (Phi q* + b)), with
    a training mask over the non-missing pixels; sampling the label clamps every pixel."""
    import pyro

    import ppl

    torch.set_default_dtype(torch.float32)
    model = ppl.load(ROOT / "examples" / "mdbm_digits.bdl")
    from sklearn.datasets import load_digits

    X, Y = load_digits(return_X_y=True)
    px = np.floor(X[:16] * 4 / 17)
    px[np.random.default_rng(1).random(px.shape) < 0.25] = np.nan
    fit = model.fit({"pixels": px, "label": Y[:16]}, infer="map", steps=1, lr=1e-3,
                    dtype="float32")
    kw = dict(fit.binder({"pixels": px, "label": Y[:16]}))
    torch.manual_seed(3)
    tr = pyro.poutine.trace(model.pyro_model).get_trace(**kw)
    tr.compute_log_prob()
    fn = tr.nodes["pixels"]["fn"]
    while not isinstance(fn, M._VisibleSite):
        fn = fn.base_dist
    m = fn.session.model
    st = M._states(kw["pixels"], m.b.device)
    torch.manual_seed(3)
    shown = m.training_mask(st)  # the same draw as inside the model run
    assert 0.25 < float(shown.float().mean()) < 0.4  # 40% of the ~75% non-missing
    assert not shown[st < 0].any()
    with torch.no_grad():
        z, _, p = m.infer(torch.where(shown, st, torch.full_like(st, -1)), grad=False,
                          tol=1e-6, max_iter=500)
        lv = torch.log_softmax(m.readout_logits(z, p, "visible"), -1)
        target = (~shown) & (st >= 0)
        want_v = 0.5 * lv.gather(-1, st.clamp_min(0)[..., None])[..., 0][target].sum()
        ll = torch.log_softmax(m.readout_logits(z, p, "label")[:, 0], -1)
        want_l = 0.5 * ll.gather(-1, torch.as_tensor(Y[:16])[:, None]).sum()
    got_v = float(tr.nodes["pixels"]["log_prob_sum"].detach())
    got_l = float(tr.nodes["label"]["log_prob_sum"].detach())
    assert got_v == pytest.approx(float(want_v), rel=1e-3)
    assert got_l == pytest.approx(float(want_l), rel=1e-3)
    # prediction: the label is sampled, every non-missing pixel is clamped
    kw["label"] = None
    tr = pyro.poutine.trace(model.pyro_model).get_trace(**kw)
    fn = tr.nodes["label"]["fn"]
    while not isinstance(fn, M._LabelSite):
        fn = fn.base_dist
    _, st2, shown2, _, _ = fn.session.solved()
    assert torch.equal(shown2, st2 >= 0)
    assert tr.nodes["label"]["value"].shape == (16,)


# ---- the readout temperatures ------------------------------------------------------
def test_readout_rescales_logits_not_the_fixed_point():
    """The loss scores softmax(tau^2 (Phi q* + b)) (tau per visible unit, one for the
    label); the fixed point and every most probable state are those of q*."""
    m = _tiny(readout=10.0, tol=1e-12, max_iter=3000)
    with torch.no_grad():
        m.tau_visible.copy_(torch.linspace(0.5, 4.0, 5)[:, None])
        m.tau_label.fill_(1.7)
    x, y = _data()
    shown = x >= 0
    xf = torch.where(shown, x, 1)
    loss, _ = m.loss(xf, y, shown=shown)
    with torch.no_grad():
        z, _, p = m.infer(torch.where(shown, xf, -1), grad=False)
        lg = p.field(z)
        _, off, n, k = m.layout.segment("visible")
        lv = torch.log_softmax(lg[:, off:off + n * k].reshape(-1, n, k)
                               * torch.linspace(0.5, 4.0, 5)[:, None] ** 2, -1)
        nll_v = -lv.gather(-1, xf[..., None])[..., 0][~shown].mean()
        _, off, _, k = m.layout.segment("label")
        ll = torch.log_softmax(1.7 ** 2 * lg[:, off:off + k], -1)
        want = 0.5 * nll_v - 0.5 * ll.gather(-1, y[:, None]).mean()
    assert float(loss.detach()) == pytest.approx(float(want), rel=1e-10)
    loss.backward()
    assert m.tau_visible.grad.abs().max() > 0 and m.tau_label.grad.abs() > 0
    # prediction: clamped pixels one-hot, the rest the readout distribution, whose most
    # probable state is q*'s (softmax is monotone, tau^2 > 0)
    pv, pl, _ = m.predict(x)
    _, voff, vn, vk = m.layout.segment("visible")
    qv = z[:, voff:voff + vn * vk].reshape(-1, vn, vk)
    assert torch.equal(pv[shown], qv[shown])
    assert torch.equal(pv.argmax(-1)[~shown], qv.argmax(-1)[~shown])
    assert not torch.allclose(pv[~shown], qv[~shown], atol=1e-3)
    assert torch.equal(pl.argmax(-1), z[:, off:off + k].argmax(-1))
    # readout=None: tau = 1 and no parameters, the logits are Phi q* + b
    m0 = _tiny(readout=None)
    assert not hasattr(m0, "tau_visible")
    assert torch.equal(m0.readout_logits(z, p, "visible"), m0.logits(z, p, "visible"))


def test_readout_lifts_the_margin_cap_on_confidence():
    """Why the readout exists: two binary pixels that are always equal. I - Phi >= mI
    caps the coupling between them, so the mean-field logit gap of the hidden pixel, and
    with it the held-out cross-entropy, is bounded away from 0; a learned readout scale
    lets the same monotone coupling make confident (near-zero CE) predictions."""
    lay_units = M.units(2, 2)
    # both values of both pixels, each pixel held out in turn: the bias alone cannot help
    x = torch.tensor([[0, 0], [1, 1], [0, 0], [1, 1]])
    shown = torch.tensor([[True, False], [True, False], [False, True], [False, True]])
    ces = {}
    for readout in (None, 10.0):
        m = M.MonotoneDBM(visible=lay_units, margin=0.01, seed=0, readout=readout,
                          solver="pr", tol=1e-10, max_iter=500, cap=1.0)
        opt = torch.optim.Adam(m.parameters(), lr=0.05)
        # 100 steps: at seeds 0-2 the readout's CE was <= 0.0014 (its bound 0.02), and
        # without one the CE had reached its floor (0.316-0.318; 300 steps: 0.317-0.319)
        for _ in range(100):
            opt.zero_grad()
            loss, _ = m.loss(x, None, shown=shown)
            loss.backward()
            opt.step()
        assert m.check_margin() >= 0.01 - 1e-10
        ces[readout] = 2 * float(loss.detach())  # the loss is 0.5 CE
    # without a readout the coupling block M has ||M||_2 <= lambda_max(Phi) <= 1 - m, so
    # the two conditional logit gaps differ by (1,-1) M (1,-1)^T <= 2(1 - m), and by
    # convexity the mean CE is at least softplus(-(1 - m))
    assert ces[None] > float(torch.nn.functional.softplus(torch.tensor(-0.99))) - 1e-6
    assert ces[10.0] < 0.02


# ---- the benchmark -------------------------------------------------------------------
def test_benchmark_rows_and_columns(tmp_path, bench):
    import json

    torch.set_default_dtype(torch.float32)
    mdbm = bench("mdbm_digits")
    out = tmp_path / "out.json"
    mdbm.main(["--train", "32", "--test", "16", "--batch", "16", "--epochs", "1",
               "--hidden", "8", "--fractions", "0.4", "--solver-iters", "30",
               "--sweep-disagreement", "--json", str(out)])
    res = json.loads(out.read_text())
    for row in ("monotone", "baseline", "baseline_dense"):
        assert {"imput_err", "label_acc", "converged_frac", "max_disagreement",
                "lambda_min"} <= set(res[row])
        assert res[f"{row}@0.4"]["max_disagreement"] >= 0
        assert 0 <= res[row]["imput_err"] <= 1 and 0 <= res[row]["label_acc"] <= 1
    assert res["monotone"]["converged_frac"] == 1.0
    assert res["monotone"]["max_disagreement"] < 1e-4
    assert res["monotone"]["lambda_min"] >= 0.01 - 1e-5
    # the default cap 2: lambda_min reports 2 - lambda_max(P Phi P)
    assert res["monotone"]["lambda_max_PPhiP"] <= 1.99 + 1e-5
    assert res["monotone"]["lambda_min"] == pytest.approx(
        2.0 - res["monotone"]["lambda_max_PPhiP"], abs=1e-5)
    for row in ("fb", "fb_anderson", "pr", "mf"):
        assert res[row]["iters"] >= 1 and res[row]["ms_per_batch"] > 0
    assert 0 <= res["marginal_mode"]["imput_err"] <= 1
    for row in ("monotone", "baseline"):
        assert 0 <= res[row]["hidden_entropy"] <= 1 + 1e-6
        assert 0 <= res[row]["hidden_probe_acc"] <= 1
    assert 0 <= res["pixel_logreg"]["label_acc"] <= 1
    assert 0 <= res["pixel_logreg_epochs"]["label_acc"] <= 1
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            mdbm.main(["--device", "cuda"])


def test_benchmark_resume_equals_one_run(tmp_path, bench):
    """Two epochs in one run and one epoch plus a resumed second give the same parameters
    (model, readout) and the same results, for the monotone model and the RBM."""
    import json

    torch.set_default_dtype(torch.float32)
    mdbm = bench("mdbm_digits")
    # two batches an epoch, so a resumed epoch has more than one step to replay
    base = ["--train", "32", "--test", "16", "--batch", "16", "--hidden", "8",
            "--fractions", "0.4", "--models", "monotone,baseline", "--no-solver-table",
            "--no-hidden-use"]
    one, two = tmp_path / "one", tmp_path / "two"
    mdbm.main(base + ["--epochs", "2", "--checkpoint", str(one),
                      "--json", str(tmp_path / "one.json")])
    mdbm.main(base + ["--epochs", "1", "--checkpoint", str(two)])
    first = torch.load(f"{two}_monotone.pt")
    mdbm.main(base + ["--epochs", "2", "--checkpoint", str(two), "--resume",
                      "--json", str(tmp_path / "two.json")])
    for name in ("monotone", "baseline"):
        a, b = torch.load(f"{one}_{name}.pt"), torch.load(f"{two}_{name}.pt")
        assert a["epochs"] == b["epochs"] == 2
        for k, v in a["model"].items():
            assert torch.equal(v, b["model"][k]), (name, k)
    assert not torch.equal(first["model"]["b"], a["model"]["b"])  # the second epoch moved it
    ra = json.loads((tmp_path / "one.json").read_text())
    rb = json.loads((tmp_path / "two.json").read_text())
    for row in ("monotone", "baseline", "monotone@0.4", "baseline@0.4"):
        for col in ("imput_err", "label_acc", "converged_frac"):
            assert ra[row][col] == rb[row][col], (row, col)
    with pytest.raises(ValueError, match="more than --epochs"):
        mdbm.main(base + ["--epochs", "1", "--checkpoint", str(two), "--resume"])
    # a resume with other training settings is refused, not mixed into one run
    with pytest.raises(ValueError, match="other settings: --seed 0"):
        mdbm.main(base + ["--epochs", "3", "--checkpoint", str(two), "--resume", "--seed", "1"])
    with pytest.raises(SystemExit):
        mdbm.main(base + ["--resume"])


def test_benchmark_train_observed_range(tmp_path, bench):
    """``--train-observed LO:HI`` builds every model with per-image fractions from
    U(LO, HI) (the default keeps ``--observed``), is a training setting a resume must
    match, and rejects malformed ranges."""
    import argparse

    torch.set_default_dtype(torch.float32)
    mdbm = bench("mdbm_digits")
    ns = argparse.Namespace(
        observed=0.4, train_observed=(0.1, 0.9), tiers=1, margin=0.01, alpha=0.125,
        tol=1e-4, max_iter=50, mask="random", seed=0, readout=10.0, label_readout=1.0,
        rank=None, pattern="full", cap=2.0, coupling="dense", device=torch.device("cpu"))
    for kind in ("monotone", "baseline"):
        assert mdbm.build(kind, 4, 8, ns).observed == (0.1, 0.9)
    ns.train_observed = None
    assert mdbm.build("monotone", 4, 8, ns).observed == 0.4
    base = ["--train", "32", "--test", "16", "--batch", "16", "--hidden", "8",
            "--fractions", "0.4", "--models", "monotone", "--no-solver-table",
            "--no-hidden-use", "--epochs", "1", "--checkpoint", str(tmp_path / "ck")]
    mdbm.main(base + ["--train-observed", "0.1:0.9"])
    with pytest.raises(ValueError, match="other settings: --train_observed"):
        mdbm.main(base[:-4] + ["--epochs", "2", "--checkpoint", str(tmp_path / "ck"),
                               "--resume"])
    for bad in ("0.9:0.1", "0.5", "a:b", "0:1.5"):
        with pytest.raises(SystemExit):
            mdbm.main(["--train-observed", bad])


def test_hidden_use_diagnostics_exact_cases(bench):
    from types import SimpleNamespace

    mdbm = bench("mdbm_digits")
    args = SimpleNamespace(mask="random", seed=0, batch=8, K=3)
    g = torch.Generator().manual_seed(4)
    Xtr, Xte = torch.randint(0, 3, (40, 5), generator=g), torch.randint(0, 3, (24, 5), generator=g)
    # the label is pixel 0's state: with every pixel shown a linear probe on the one-hot
    # pixels is exact
    assert mdbm.pixel_logreg(Xtr, Xtr[:, 0], Xte, Xte[:, 0], 1.0, args) == 1.0
    Ytr, Yte = torch.randint(0, 4, (40,), generator=g), torch.randint(0, 4, (24,), generator=g)
    m = _tiny()
    _, off, n, k = m.layout.segment("hidden0")
    _, off1, n1, k1 = m.layout.segment("hidden1")
    with torch.no_grad():  # hidden units decoupled and unbiased: q* uniform, no information
        m.A[:, off:off1 + n1 * k1] = 0.0
        m.b[off:off1 + n1 * k1] = 0.0
    out = mdbm.hidden_use(m, Xtr, Ytr, Xte, Yte, 0.5, args)
    assert out["hidden_entropy"] == pytest.approx(1.0, abs=1e-12)
    # constant features: the probe predicts the training majority class
    majority = torch.bincount(Ytr).argmax()
    assert out["hidden_probe_acc"] == pytest.approx(float((Yte == majority).double().mean()))
    with torch.no_grad():  # one state forced on: entropy 0
        m.b[off:off1 + n1 * k1] = torch.cat([torch.tensor([60.0] + [0.0] * (k - 1)).repeat(n),
                                             torch.tensor([60.0] + [0.0] * (k1 - 1)).repeat(n1)])
    assert mdbm.hidden_use(m, Xtr, Ytr, Xte, Yte, 0.5, args)["hidden_entropy"] < 1e-20


# ---- convolutional coupling ----------------------------------------------------------
def _conv_model(init_scale=1.0, seed=0, **kw):
    kw.setdefault("cap", 1.0)  # the conv tests check Feng et al.'s class
    m = M.MonotoneDBM(visible=M.units(16, 2), hidden=[M.units(16, 3)], label=M.units(1, 3),
                      margin=0.01, coupling="conv", kernel=3, channels=2,
                      init_scale=init_scale, seed=seed, **kw)
    with torch.no_grad():
        m.b.normal_(generator=torch.Generator().manual_seed(seed + 1))
    return m


def _conv_data(seed: int, B: int):
    """``B`` binary 4x4 images with their labels (3 classes) and a random half shown."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 2, (B, 16), generator=g)
    y = torch.randint(0, 3, (B,), generator=g)
    return x, y, torch.rand(B, 16, generator=g) < 0.5


def _loss_difference(m, w, i, x, y, shown, eps=1e-6) -> float:
    """Central finite difference of ``m.loss`` in the entry ``w[i]``."""
    with torch.no_grad():
        w[i] += eps
        lp, _ = m.loss(x, y, shown=shown)
        w[i] -= 2 * eps
        lm, _ = m.loss(x, y, shown=shown)
        w[i] += eps
    return float(lp - lm) / (2 * eps)


def test_conv_operator_is_the_convolution():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 2, 3, 3, generator=g)
    A = M.conv_operator(w, 4, 2)
    assert A.shape == (3 * 16, 16 * 2)
    x = torch.randn(5, 16, 2, generator=g)  # [B, pixel, state], the layout's order
    img = x.permute(0, 2, 1).reshape(5, 2, 4, 4)
    want = torch.nn.functional.conv2d(img, w, padding=1).reshape(5, -1)
    assert torch.allclose(x.reshape(5, -1) @ A.T, want, atol=1e-12)


@pytest.mark.parametrize("init_scale", [0.5, 1.0, 20.0])
def test_conv_phi_symmetric_hollow_margin_local(init_scale):
    m = _conv_model(init_scale)
    Phi = m.phi().detach()
    assert torch.allclose(Phi, Phi.T, atol=1e-12)
    assert Phi[m.layout.block_mask()].abs().max() == 0
    assert float(torch.linalg.eigvalsh(torch.eye(Phi.shape[0]) - Phi)[0]) >= 0.01 - 1e-10
    # locality and weight sharing between visible pixels (4x4 grid, 2 states): pixels more
    # than kernel - 1 = 2 apart do not interact; equal offsets give equal blocks in the
    # interior
    blk = Phi[:32, :32].reshape(16, 2, 16, 2).permute(0, 2, 1, 3)
    rc = [(i // 4, i % 4) for i in range(16)]
    for i, (r1, c1) in enumerate(rc):
        for j, (r2, c2) in enumerate(rc):
            if max(abs(r1 - r2), abs(c1 - c2)) > 2:
                assert blk[i, j].abs().max() == 0
    # pixels (1,1)-(1,2) and (2,1)-(2,2): same offset, both pairs away from the border
    assert torch.allclose(blk[5, 6], blk[9, 10], atol=1e-12)
    assert blk[5, 6].abs().max() > 0


@pytest.mark.parametrize("solver,opts", [("fb", {"alpha": 0.125, "anderson": 5}),
                                          ("pr", {"alpha": 1.0})])
def test_conv_unique_fixed_point_under_masks(solver, opts):
    m = _conv_model(init_scale=5.0)
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 2, (4, 16), generator=g)
    x = torch.where(torch.rand(4, 16, generator=g) < 0.5, x, -1)
    p1 = M._detached(m.problem(x))
    R = 5
    p = M.Problem(p1.Phi, p1.b, p1.layout, p1.clamp_mask.repeat(R, 1),
                  p1.clamp_value.repeat(R, 1), p1.cap)
    z, info = M.solve(p, p.random_start(R * 4, g), solver, tol=1e-12, max_iter=3000, **opts)
    assert float(p.residual(z).max()) < 1e-11
    z = z.view(R, 4, -1)
    assert (z - z[0]).abs().max() < 1e-8
    assert torch.allclose(z[0], p1.mean_field(z[0]), atol=1e-10)


def test_conv_model_trains_within_the_margin():
    m = _conv_model()
    opt = torch.optim.Adam(m.parameters(), lr=0.3)
    x, y, shown = _conv_data(4, 6)
    for _ in range(4):
        opt.zero_grad()
        loss, _ = m.loss(x, y, shown=shown, solver="pr", tol=1e-8, max_iter=500)
        loss.backward()
        assert all(w.grad.abs().max() > 0 for w in m.conv) and m.A_label.grad.abs().max() > 0
        opt.step()
        assert m.check_margin() >= 0.01 - 1e-10
    with pytest.raises(ValueError, match="square"):
        M.MonotoneDBM(visible=M.units(10, 2), coupling="conv")
    with pytest.raises(ValueError, match="dense"):
        M.MonotoneDBM(visible=M.units(16, 2), coupling="conv", monotone=False)


def test_conv_implicit_gradient_matches_finite_differences():
    m = _conv_model(init_scale=3.0, tol=1e-12, max_iter=3000)
    m.solver = "pr"
    x, y, shown = _conv_data(5, 4)
    loss, _ = m.loss(x, y, shown=shown)
    loss.backward()
    w = m.conv[1]
    fd = _loss_difference(m, w, (0, 2, 1, 0), x, y, shown)
    assert abs(fd) > 1e-4
    assert float(w.grad[0, 2, 1, 0]) == pytest.approx(fd, abs=1e-7)


# ---- layered convolutional coupling (coupling="conv", pattern="layered") ---------------
@pytest.mark.parametrize("cap", [1.0, 2.0])
def test_layered_conv_phi_structure_margin_and_training(cap):
    """Two row blocks of ``channels`` feature maps, (visible, hidden) and (hidden, label):
    no visible-label coupling, a local and weight-shared visible-hidden block, a dense
    hidden-label block; symmetric, hollow, within the cap; Adam steps keep all of it."""
    m = _conv_model(init_scale=3.0, pattern="layered", cap=cap)
    lay = m.layout
    _, ov, nv, kv = lay.segment("visible")
    _, oh, nh, kh = lay.segment("hidden0")
    _, ol, _, kl = lay.segment("label")
    A = m.a_matrix().detach()
    r = 2 * 16  # channels x grid
    assert A.shape == (2 * r, lay.d) and len(m.conv) == 3
    assert A[:r, ol:].abs().max() == 0 and A[r:, ov:ov + nv * kv].abs().max() == 0
    opt = torch.optim.Adam(m.parameters(), lr=0.3)
    x, y, shown = _conv_data(4, 6)
    for _ in range(4):
        Phi = m.phi().detach()
        assert torch.allclose(Phi, Phi.T, atol=1e-12)
        assert Phi[lay.block_mask()].abs().max() == 0
        assert m.check_margin() >= 0.01 - 1e-10
        assert Phi[ov:ov + nv * kv, ol:].abs().max() == 0  # no visible-label block
        assert Phi[oh:oh + nh * kh, ol:].abs().min() > 0  # hidden-label: dense
        vh = Phi[ov:ov + nv * kv, oh:oh + nh * kh].reshape(16, kv, 16, kh).permute(0, 2, 1, 3)
        for i in range(16):
            for j in range(16):
                if max(abs(i // 4 - j // 4), abs(i % 4 - j % 4)) > 2:
                    assert vh[i, j].abs().max() == 0
        assert torch.allclose(vh[5, 6], vh[9, 10], atol=1e-12) and vh[5, 6].abs().max() > 0
        opt.zero_grad()
        loss, _ = m.loss(x, y, shown=shown, solver="pr", tol=1e-8, max_iter=500)
        loss.backward()
        assert all(w.grad.abs().max() > 0 for w in m.conv) and m.A_label.grad.abs().max() > 0
        opt.step()
    with pytest.raises(ValueError, match="layer_ranks"):
        _conv_model(pattern="layered", layer_ranks=[2, 2])
    with pytest.raises(ValueError, match="two groups"):
        M.MonotoneDBM(visible=M.units(16, 2), coupling="conv", pattern="layered")


def test_layered_conv_columns_start_at_init_scale():
    """Every column of the layered conv ``A`` starts with E||a||^2 = init_scale^2 x
    (kernel taps inside the 4x4 grid) / kernel^2 -- each weight has variance
    init_scale^2 / (channels kernel^2) and a column holds channels x taps of them -- summed
    over the row blocks that reach it: the hidden tier's columns sit in both blocks, so
    each block's share is scaled by 1/sqrt(2) (``reach``); the label's dense columns,
    in one block, init_scale^2. Pooled over 8 seeds the ratio of the mean squared norm
    to that value is 1 within 0.25 for each group (Monte Carlo sd: 0.08 for the
    visible columns, whose 36 shared weights give the fewest degrees of freedom, 0.05
    for the others); dropping or doubling the 1/sqrt(2) makes the hidden ratio 2 or
    1/2."""
    ratio = {"visible": 0.0, "hidden0": 0.0, "label": 0.0}
    i = torch.arange(16)
    lo, hi = (i // 4 - 1).clamp(min=0), (i // 4 + 1).clamp(max=3)
    lo2, hi2 = (i % 4 - 1).clamp(min=0), (i % 4 + 1).clamp(max=3)
    taps = ((hi - lo + 1) * (hi2 - lo2 + 1)).double()  # 3x3 taps inside the grid, per pixel
    seeds = range(8)
    for seed in seeds:
        m = _conv_model(init_scale=3.0, pattern="layered", cap=2.0, seed=seed)
        sq = m.a_matrix().detach().double().pow(2).sum(0)
        for name in ratio:
            _, o, n, k = m.layout.segment(name)
            want = 9.0 if name == "label" else 9.0 * taps[:, None] / 9
            ratio[name] += float((sq[o:o + n * k].reshape(n, k) / want).mean()) / len(seeds)
    for name, r in ratio.items():
        assert r == pytest.approx(1.0, abs=0.25), (name, r)


def test_layered_conv_full_pattern_unchanged():
    """The full conv pattern is the layered code's one-block case: the same parameters,
    drawn in the same order, as before the layered option (the benchmark's seeded rows)."""
    m = _conv_model(seed=3)
    g = torch.Generator().manual_seed(3)
    w0 = torch.randn(2, 2, 3, 3, generator=g) / math.sqrt(2 * 9)
    w1 = torch.randn(2, 3, 3, 3, generator=g) / math.sqrt(2 * 9)
    a = torch.randn(32, 3, generator=g) * (1.0 / math.sqrt(32))
    assert torch.equal(m.conv[0].detach(), w0) and torch.equal(m.conv[1].detach(), w1)
    assert torch.equal(m.A_label.detach(), a)
    cols = [M.conv_operator(w0, 4, 2), M.conv_operator(w1, 4, 3), a]
    assert torch.allclose(m.a_matrix().detach(), torch.cat(cols, 1), atol=1e-14)


@pytest.mark.parametrize("clamp_label", [False, True])
def test_layered_conv_unique_fixed_point(clamp_label):
    m = _conv_model(init_scale=5.0, pattern="layered", cap=2.0, evidence_gain=3.0)
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 2, (4, 16), generator=g)
    x = torch.where(torch.rand(4, 16, generator=g) < 0.5, x, -1)
    y = torch.randint(0, 3, (4,), generator=g)
    p1 = M._detached(m.problem(x, y if clamp_label else None))
    ref = _fixed_point_from_starts(
        p1, [("fb", {"alpha": 0.125, "anderson": 5}), ("pr", {"alpha": 0.5})], seed=7)
    assert torch.allclose(ref, p1.mean_field(ref), atol=1e-10)


def test_layered_conv_implicit_gradient_matches_finite_differences():
    m = _conv_model(init_scale=3.0, pattern="layered", cap=2.0, tol=1e-12, max_iter=3000)
    m.solver = "fb"
    x, y, shown = _conv_data(5, 4)
    loss, _ = m.loss(x, y, shown=shown)
    loss.backward()
    # the hidden tier's convolution in the (hidden, label) block and a label column
    for w, i in ((m.conv[2], (1, 2, 0, 1)), (m.A_label, (7, 1))):
        fd = _loss_difference(m, w, i, x, y, shown)
        assert abs(fd) > 1e-4
        assert float(w.grad[i]) == pytest.approx(fd, abs=1e-7)


def _fit_example_with(tmp_path, options: str) -> dict:
    """Fit the digits example with ``options`` added to its ``monotone_dbm(...)`` call
    (2 MAP steps on 16 images); returns Pyro's parameter store."""
    import pyro

    import ppl

    torch.set_default_dtype(torch.float32)
    src = (ROOT / "examples" / "mdbm_digits.bdl").read_text().replace(
        "margin=0.01,", "margin=0.01, " + options)
    assert options in src
    path = tmp_path / "variant.bdl"
    path.write_text(src)
    model = ppl.load(path)
    from sklearn.datasets import load_digits

    X, Y = load_digits(return_X_y=True)
    px = np.floor(X[:16] * 4 / 17)
    fit = model.fit({"pixels": px, "label": Y[:16]}, infer="map", steps=2, lr=1e-3,
                    dtype="float32")
    assert np.isfinite(np.asarray(fit.elbo, dtype=float)).all()
    return dict(pyro.get_param_store().items())


def test_conv_coupling_from_the_language(tmp_path):
    params = _fit_example_with(tmp_path, 'coupling="conv", kernel=3, channels=2,')
    net = [v for k, v in params.items() if "conv" in k]
    assert len(net) == 2 and tuple(net[0].shape) == (2, 4, 3, 3)


def test_layered_conv_coupling_from_the_language(tmp_path):
    params = _fit_example_with(tmp_path, 'coupling="conv", pattern="layered", channels=2,')
    net = [tuple(v.shape) for k, v in params.items() if "conv" in k]
    # visible and hidden in the first row block, hidden in the second, label columns there
    assert net == [(2, 4, 3, 3)] * 3
    (a,) = [v for k, v in params.items() if k.endswith("A_label")]
    assert tuple(a.shape) == (2 * 64, 10)


def test_evidence_gain_from_the_language(tmp_path):
    """``evidence_gain=4`` gives one learned gain per visible unit, started at 4 and
    fitted with the rest; a gain <= 0 is a located check error."""
    params = _fit_example_with(tmp_path, "evidence_gain=4,")
    (gain,) = [v for k, v in params.items() if k.endswith("gain_visible")]
    assert tuple(gain.shape) == (64, 1)
    assert torch.all(gain != 4.0) and abs(float(gain.mean()) - 4.0) < 0.05  # 2 MAP steps
    src = (ROOT / "examples" / "mdbm_digits.bdl").read_text().replace(
        "margin=0.01,", "margin=0.01, evidence_gain=-1,")
    import ppl

    with pytest.raises(ppl.BdlError, match="evidence_gain"):
        ppl.compile(src)
    with pytest.raises(ppl.BdlError, match="'evidence_gain' of monotone_dbm must be a "
                                           "number, not a bool"):
        ppl.compile(src.replace("evidence_gain=-1", "evidence_gain=true"))


def test_rbm_baseline_from_the_language(tmp_path):
    params = _fit_example_with(tmp_path, 'monotone=false, pattern="layered",')
    (W,) = [v for k, v in params.items() if k.endswith("W")]
    # 64 visible x 4 + 64 hidden x 4 + 10 label: only visible-hidden and hidden-label
    # entries of W are free (the rest stay at their zero start through the fit)
    free = torch.zeros(522, 522, dtype=torch.bool)
    free[:256, 256:512] = free[256:512, :256] = True
    free[256:512, 512:] = free[512:, 256:512] = True
    assert W.detach()[~free].abs().max() == 0 and W.detach()[free].abs().min() > 0


def test_layered_monotone_from_the_language(tmp_path):
    params = _fit_example_with(tmp_path, 'pattern="layered", layer_ranks=[40, 30],')
    (A,) = [v for k, v in params.items() if k.endswith("A")]
    # 64 visible x 4 + 64 hidden x 4 + 10 label; rows 0-39 see visible and hidden, rows
    # 40-69 hidden and label: the rest of A stays at its zero start through the fit
    free = torch.zeros(70, 522, dtype=torch.bool)
    free[:40, :512] = free[40:, 256:] = True
    assert A.shape == (70, 522)
    assert A.detach()[~free].abs().max() == 0 and A.detach()[free].abs().min() > 0


@pytest.mark.parametrize("kw, message", [
    ({"label_readout": 0.0}, "label_readout must be > 0"),
    ({"label_readout": -1.0}, "label_readout must be > 0"),
    ({"readout": -2.0}, "readout must be >= 0"),
])
def test_readout_temperatures_must_be_valid(kw, message):
    """tau_label = 0 would never move (d tau^2 / d tau = 0 there) and a negative initial
    tau^2 has no square root: both are clear errors, not a silent dead label or a
    math domain error."""
    with pytest.raises(ValueError, match=message):
        _tiny(**kw)
    # readout=0 means no readout at all: the label's then has no effect and is not checked
    if "label_readout" in kw:
        assert _tiny(readout=0, **kw).readout is None



# ---- the cap-2 class: lambda_max(P Phi P) <= 2 - m on the simplices' tangent space -----
def _projector(layout) -> torch.Tensor:
    """``P = I - blockdiag(1 1^T / k_i)`` built here from the unit sizes alone."""
    return torch.block_diag(*[torch.eye(k) - torch.full((k, k), 1.0 / k)
                              for k in layout.unit_k])


def _lam_t(Phi, layout) -> float:
    """lambda_max(P Phi P) on T, independently of the module (P Phi P has eigenvalue 0 off
    T, and every Phi here has a positive eigenvalue on T)."""
    P = _projector(layout).to(Phi.dtype)
    return float(torch.linalg.eigvalsh(P @ Phi @ P)[-1])


def _hollow_phi(layout, lam_t: float, seed: int = 9) -> torch.Tensor:
    """A random symmetric block-hollow Phi scaled to lambda_max(P Phi P) = ``lam_t``."""
    W = torch.randn(layout.d, layout.d, generator=torch.Generator().manual_seed(seed))
    Phi = (0.5 * (W + W.T)).masked_fill(layout.block_mask(), 0.0)
    return Phi * (lam_t / M.lambda_max_tangent(Phi, layout))


@pytest.mark.parametrize("cap, alpha", [(2.0, 0.5), (2.0, 0.25), (2.0, 0.05), (1.5, 0.3)])
def test_prox_cap_matches_constrained_optimiser(cap, alpha):
    """prox_{alpha f_c}(y) = argmin_q sum q log q - c/2 ||q||^2 + ||q - y||^2 / (2 alpha) on
    the simplex, against SLSQP; and its autograd Jacobian against finite differences."""
    from scipy.optimize import minimize

    y = torch.randn(4, 5, generator=torch.Generator().manual_seed(3)) * 2
    q = M.prox_softmax_cap(y, alpha, cap)
    for i in range(4):
        yi = y[i].numpy()

        def obj(v, yi=yi):
            v = np.clip(v, 1e-300, None)
            return 0.5 * ((v - yi) ** 2).sum() + alpha * ((v * np.log(v)).sum()
                                                         - 0.5 * cap * (v ** 2).sum())

        r = minimize(obj, np.full(5, 0.2), method="SLSQP", bounds=[(0, 1)] * 5,
                     constraints=[{"type": "eq", "fun": lambda v: v.sum() - 1}],
                     options={"ftol": 1e-14, "maxiter": 500})
        assert np.abs(r.x - q[i].numpy()).max() < 2e-5
        assert obj(q[i].numpy()) <= r.fun + 1e-12
    if alpha * cap == 1.0:  # beta = 1: the prox is softmax(y / (1 - alpha (c - 1)))
        assert torch.allclose(q, torch.softmax(y / (1 - alpha * (cap - 1)), -1), atol=1e-14)
    eps = 1e-6
    J = torch.autograd.functional.jacobian(lambda v: M.prox_softmax_cap(v, alpha, cap), y[0])
    Jfd = torch.stack([(M.prox_softmax_cap(y[0] + eps * e, alpha, cap)
                        - M.prox_softmax_cap(y[0] - eps * e, alpha, cap)) / (2 * eps)
                       for e in torch.eye(5)], 1)
    assert torch.allclose(J, Jfd, atol=1e-7)
    with pytest.raises(ValueError, match="1/cap"):
        M.prox_softmax_cap(y, 1.01 / cap, cap)


def test_cap2_class_is_every_hollow_phi_below_twice_the_cap():
    """With dense A of rank d and cap 2, s (D - A^T A) reaches every symmetric block-hollow
    Phi with lambda_max(P Phi P) <= 2 - m, including ones with lambda_max(Phi) > 1 (outside
    Feng et al.'s I - Phi >= m I): A^T A = B - Phi with B_i = (2 - m) P_i + t 1 1^T / k_i
    (so ||P_i B_i P_i|| = 2 - m and s = 1), PSD for large t when lambda_max(P Phi P) <
    2 - m (a Schur complement; here 1.95)."""
    m = _tiny()
    lay, d = m.layout, m.layout.d
    Phi = _hollow_phi(lay, 1.95)
    P = lay.centring()
    B = (1.99 * P + 1e4 * (torch.eye(d) - P)) * lay.block_mask()
    e, U = torch.linalg.eigh(B - Phi)
    assert e[0] > -1e-10
    A = (U * e.clamp_min(0).sqrt()) @ U.T
    out, s = M.monotone_phi(A, lay, 0.01, cap=2.0)
    assert float(s) == pytest.approx(1.0, abs=1e-10)
    assert torch.allclose(out, Phi, atol=1e-9)
    assert torch.linalg.eigvalsh(Phi)[-1] > 1.0  # outside the cap-1 class
    # nothing beyond the cap: every cap-2 Phi has lambda_max(P Phi P) <= 2 - m, whatever A
    W = torch.randn(d, d, generator=torch.Generator().manual_seed(4)) * 5
    assert M.lambda_max_tangent(M.monotone_phi(W, lay, 0.01, cap=2.0)[0], lay) <= 1.99 + 1e-10
    # and the same A at cap 1 stays inside Feng et al.'s class
    Phi1 = M.monotone_phi(A, lay, 0.01)[0]
    assert torch.linalg.eigvalsh(torch.eye(d) - Phi1)[0] >= 0.01 - 1e-10


@pytest.mark.parametrize("init_scale", [1.0, 30.0])
def test_cap2_model_margin_and_effective_coupling(init_scale):
    """The cap-2 model: symmetric, hollow, check_margin = 2 - lambda_max(P Phi P) >= m;
    (Phi_eff, b_eff) = (P Phi P, b + P Phi qbar) gives the same field up to per-unit
    constants on the simplices, and 2 I - Phi_eff is positive definite on all of R^d
    while 2 I - Phi need not be."""
    m = _tiny(init_scale=init_scale, cap=2.0)
    Phi = m.phi().detach()
    lay = m.layout
    assert torch.allclose(Phi, Phi.T, atol=1e-12)
    assert Phi[lay.block_mask()].abs().max() == 0
    lam_t = _lam_t(Phi, lay)
    assert M.lambda_max_tangent(Phi, lay) == pytest.approx(lam_t, abs=1e-10)
    assert m.check_margin() == pytest.approx(2.0 - lam_t, abs=1e-10)
    assert 2.0 - lam_t >= 0.01 - 1e-10
    assert lam_t > 1.0  # beyond Feng et al.'s cap for these A
    Q = lay.tangent_basis()
    assert torch.allclose(Q @ Q.T, lay.centring(), atol=1e-12)
    p = M._detached(m.problem(_data()[0]))
    Pe, be = p.effective()
    ev = torch.linalg.eigvalsh(2 * torch.eye(lay.d) - Pe)
    assert float(ev[0]) == pytest.approx(2.0 - lam_t, abs=1e-10)
    z = p.random_start(6, torch.Generator().manual_seed(0))
    diff = (z @ Pe + be) - p.field(z)  # per-unit constant
    for _, off, n, k in lay.segments:
        blk = diff[:, off:off + n * k].reshape(6, n, k)
        assert (blk - blk[..., :1]).abs().max() < 1e-12
    pe = M.Problem(Pe, be, lay, p.clamp_mask, p.clamp_value, 2.0)
    assert torch.allclose(p.fb(z, 0.25), pe.fb(z, 0.25), atol=1e-13)
    assert torch.allclose(p.mean_field(z), pe.mean_field(z), atol=1e-13)


CAP2_SOLVES = [("fb", {"alpha": 0.125, "anderson": 0}), ("fb", {"alpha": 0.125, "anderson": 5}),
               ("fb", {"alpha": 0.4, "anderson": 5}), ("pr", {}), ("pr", {"alpha": 0.2})]


@pytest.mark.parametrize("clamp_label", [False, True])
def test_cap2_unique_fixed_point_under_random_starts(clamp_label):
    """lambda_max(P Phi P) = 1.9 (outside the cap-1 class: lambda_max(Phi) > 1): FB and PR
    with the c = 2 split reach one point from 5 random starts, with and without the label
    clamped; it is the mean-field fixed point and the free energy's minimiser."""
    m = _tiny(cap=2.0)
    x, y = _data()
    Phi = _hollow_phi(m.layout, 1.9)
    assert torch.linalg.eigvalsh(Phi)[-1] > 1.0
    assert torch.linalg.eigvalsh(2 * torch.eye(m.layout.d) - Phi)[0] < 0  # Phi_eff needed
    mask, val = m.clamp(x, y if clamp_label else None)
    p = M.Problem(Phi, m.b.detach(), m.layout, mask, val, cap=2.0)
    ref = _fixed_point_from_starts(p, CAP2_SOLVES, seed=5)
    assert torch.allclose(ref, p.mean_field(ref), atol=1e-10)  # the fixed-point identity
    assert torch.equal(ref[mask], val[mask])
    if clamp_label:
        _, off, _, k = m.layout.segment("label")
        assert torch.equal(ref[:, off:off + k].argmax(1), y)
    # the free energy on the free units is lowest at ref among perturbed points of the
    # simplices (strongly convex: every perturbation raises it)
    def F(q):
        return (-0.5 * (q @ Phi * q).sum(1) - q @ m.b.detach()
                + (q * q.clamp_min(1e-300).log()).sum(1))

    g = torch.Generator().manual_seed(1)
    for t in (0.5, 0.1, 0.01):
        other = p.random_start(len(x), g)
        assert (F((1 - t) * ref + t * other) > F(ref)).all()


def test_cap2_plain_mean_field_oscillates_fb_and_pr_do_not():
    """Five binary units with aligned columns of A at cap 2: lambda_max(P Phi P) = 2 - m
    and lambda_min = -4(2 - m), so parallel mean-field swings with period 2 while the
    c = 2 FB and PR maps reach one fixed point from every start."""
    lay = M.Layout([("visible", M.Units(5, 2))])
    A = 3.0 * torch.tensor([[1.0, -1.0] * 5])
    Phi, _ = M.monotone_phi(A, lay, 0.1, cap=2.0)
    ev = torch.linalg.eigvalsh(lay.tangent_basis().T @ Phi @ lay.tangent_basis())
    assert float(ev[-1]) == pytest.approx(1.9, abs=1e-12)
    assert float(ev[0]) == pytest.approx(-7.6, abs=1e-12)
    p = M.Problem(Phi, 0.1 * torch.arange(10.0), lay, cap=2.0)
    z0 = p.random_start(8, torch.Generator().manual_seed(0))
    z = z0
    for _ in range(400):
        z = p.mean_field(z)
    z1, z2 = p.mean_field(z), p.mean_field(p.mean_field(z))
    assert (z2 - z).abs().max() < 1e-12   # period 2
    assert (z1 - z).abs().max() > 0.9     # not a fixed point
    for solver, o in [("fb", {"alpha": 0.1, "anderson": 5}), ("pr", {})]:
        zs, info = M.solve(p, z0, solver, tol=1e-12, max_iter=3000, **o)
        assert float(p.residual(zs).max()) < 1e-11
        assert (zs - zs[0]).abs().max() < 1e-9
        assert torch.allclose(zs, p.mean_field(zs), atol=1e-10)


@pytest.mark.parametrize("w, n_points", [(1.9, 1), (2.2, 2)])
def test_cap_two_is_tight(w, n_points):
    """Two binary units coupled ferromagnetically, Phi_12 = w I: lambda_max(P Phi P) = w.
    Below 2 one fixed point; above 2 the symmetric point 1/2 loses stability and the c = 2
    FB map (no longer a contraction) ends at two different fixed points, p = 0.2485 and
    0.7515 for w = 2.2 (both satisfy p = sigmoid(w (2p - 1)))."""
    lay = M.Layout([("visible", M.Units(2, 2))])
    Phi = torch.zeros(4, 4)
    Phi[0:2, 2:4] = Phi[2:4, 0:2] = w * torch.eye(2)
    assert M.lambda_max_tangent(Phi, lay) == pytest.approx(w, abs=1e-12)
    p = M.Problem(Phi, torch.zeros(4), lay, cap=2.0)
    z = p.random_start(40, torch.Generator().manual_seed(1))
    # a fixed step (solve_fb's alpha halving would stall it); residual < 1e-12 took at
    # most 950 steps (w = 1.9) over start seeds 1-3, and falls ~3 decades per 250 more
    for _ in range(1200):
        z = p.fb(z, 0.25)
    assert float(p.residual(z).max()) < 1e-12
    ends = sorted({round(v, 6) for v in z[:, 0].tolist()})
    assert len(ends) == n_points
    assert torch.allclose(z[:, 0], z[:, 2], atol=1e-12)  # p1 = p2
    assert torch.allclose(z[:, 0], torch.sigmoid(w * (2 * z[:, 0] - 1)), atol=1e-12)
    if n_points == 2:
        assert ends[0] == pytest.approx(0.2485, abs=1e-4) and ends[1] == pytest.approx(1 - ends[0])


def test_cap2_training_keeps_the_margin_and_violations_raise():
    """Adam steps at a large rate keep 2 - lambda_max(P Phi P) >= m (the scale binds);
    a coupling beyond the cap raises, one beyond Feng et al.'s cap but inside 2 does not."""
    m = _tiny(cap=2.0)
    opt = torch.optim.Adam(m.parameters(), lr=0.3)
    x, y = _data()
    for _ in range(4):
        opt.zero_grad()
        loss, _ = m.loss(torch.where(x < 0, 0, x), y, shown=x >= 0, tol=1e-8, max_iter=500)
        loss.backward()
        opt.step()
        assert m.check_margin() >= 0.01 - 1e-10
    for conv in (False, True):  # the conv and layered A use the same scale
        kw = ({"coupling": "conv", "kernel": 3, "channels": 2} if conv
              else {"pattern": "layered"})
        mm = M.MonotoneDBM(visible=M.units(4, 2), hidden=[M.units(4, 2)], label=M.units(1, 3),
                           seed=0, init_scale=5.0, cap=2.0, **kw)
        assert mm.check_margin() >= 0.01 - 1e-10
    inside = _hollow_phi(m.layout, 1.5)
    m.phi = lambda: inside
    assert m.check_margin() == pytest.approx(0.5, abs=1e-10)
    beyond = _hollow_phi(m.layout, 2.05)
    m.phi = lambda: beyond
    with pytest.raises(RuntimeError, match="margin violated"):
        m.check_margin()


@pytest.mark.parametrize("kw, message", [
    ({"cap": 2.5}, "cap must be in"), ({"cap": 0.5}, "cap must be in"),
    ({"cap": 2.0, "alpha": 0.6}, "alpha must be <= 1/cap"),
    ({"cap": 1.5, "margin": 1.5}, "margin must be in"),
])
def test_cap_options_validated(kw, message):
    with pytest.raises(ValueError, match=message):
        M.MonotoneDBM(visible=M.units(5, 3), hidden=[M.units(4, 2)], **kw)


def test_cap2_from_the_language(tmp_path):
    from ppl.runtime import nn as rt_nn

    rt_nn.reset_networks()
    params = _fit_example_with(tmp_path, "cap=2,")
    (A,) = [v for k, v in params.items() if k.endswith("A")]
    (m,) = [v for v in rt_nn._CACHE.values() if isinstance(v, M.MonotoneDBM)]
    assert m.cap == 2.0 and m.A is A
    assert m.check_margin() >= 0.01 - 1e-5  # 2 - lambda_max(P Phi P) after the MAP steps
    Phi = m.phi().detach()
    assert M.lambda_max_tangent(Phi, m.layout) > 1.0  # beyond Feng et al.'s cap


def test_benchmark_cap2_row(tmp_path, bench):
    """``--cap 2``: the monotone row reports lambda_max(P Phi P) <= 2 - m and
    lambda_min = 2 - lambda_max(P Phi P), converges everywhere and is start-independent."""
    import json

    torch.set_default_dtype(torch.float32)
    out = tmp_path / "out.json"
    bench("mdbm_digits").main(["--train", "32", "--test", "16", "--batch", "16", "--epochs", "1",
                   "--hidden", "8", "--fractions", "0.4", "--solver-iters", "30",
                   "--models", "monotone", "--cap", "2",
                   "--no-hidden-use", "--json", str(out)])
    r = json.loads(out.read_text())["monotone"]
    assert 1.0 < r["lambda_max_PPhiP"] <= 1.99 + 1e-5
    assert r["lambda_min"] == pytest.approx(2.0 - r["lambda_max_PPhiP"], abs=1e-5)
    assert r["converged_frac"] == 1.0 and r["max_disagreement"] < 1e-4


def test_default_cap_is_two_and_the_control_has_none():
    """``monotone_dbm`` defaults to the cap-2 class; the unconstrained control keeps the
    plain (c = 1) maps whatever ``cap`` says, since its Phi is never scaled."""
    m = M.MonotoneDBM(visible=M.units(5, 3), hidden=[M.units(4, 2)], seed=0)
    assert m.cap == 2.0 and m.problem(_data()[0]).cap == 2.0
    assert m.check_margin() == pytest.approx(
        2.0 - _lam_t(m.phi().detach(), m.layout), abs=1e-12)
    c = M.MonotoneDBM(visible=M.units(5, 3), hidden=[M.units(4, 2)], seed=0, monotone=False,
                      cap=2.0, alpha=1.0)
    assert c.cap == 1.0 and c.problem(_data()[0]).cap == 1.0


# ---- the solvers' convergence reporting, alpha floor, Anderson in float32 ----------------
def _cap2_problem(dtype, lam_t: float = 1.5):
    m = _tiny(cap=2.0)
    x, _ = _data()
    mask, val = m.clamp(x)
    Phi = _hollow_phi(m.layout, lam_t)
    return M.Problem(Phi.to(dtype), m.b.detach().to(dtype), m.layout, mask, val.to(dtype),
                     cap=2.0)


def test_fb_converged_means_the_mean_field_residual_is_below_tol():
    """``info["res"]`` is the mean-field residual of the returned point, and a solve that
    stops short of the stall has it below ``tol``: the FB residual (about ``alpha c``
    times smaller) is rescaled before it is compared."""
    p = _cap2_problem(torch.float64)
    z0 = p.random_start(6, torch.Generator().manual_seed(0))
    for alpha, anderson in [(0.5, 0), (0.05, 0), (0.05, 5)]:
        z, info = M.solve_fb(p, z0, alpha=alpha, anderson=anderson, tol=1e-9, max_iter=3000)
        assert not info["stalled"] and info["alpha"] == alpha
        assert torch.equal(info["res"], p.residual(z))
        assert float(p.residual(z).max()) < 1e-9
    # one step of the alpha = 0.05 map moves 0.1 times as far as the mean-field map
    assert float(info["fb_res"].max()) < 0.2e-9


def test_fb_stalls_at_the_alpha_floor_float32():
    """float32 with tol below its rounding floor (lambda_max(P Phi P) = 1.5, no Anderson):
    alpha is halved at most 10 times, the solve reports ``stalled`` without raising, and
    the point it returns is the best one it saw (mean-field residual near float32's
    rounding floor, not the drift of the ill-conditioned small-alpha prox)."""
    p = _cap2_problem(torch.float32)
    z0 = p.random_start(6, torch.Generator().manual_seed(0))
    for anderson in (0, 5):
        z, info = M.solve_fb(p, z0, alpha=0.5, anderson=anderson, tol=1e-9, max_iter=2000)
        assert info["stalled"]
        assert info["alpha"] >= 0.5 * 2.0 ** -10
        assert info["iters"] < 2000  # stopped at the floor, not by the budget
        assert torch.equal(info["res"], p.residual(z))
        assert float(info["res"].max()) < 1e-5
        assert torch.isfinite(z).all()


def test_fb_beyond_the_cap_stalls_instead_of_claiming_convergence():
    """lambda_max(P Phi P) = 3 > 2: mean-field oscillates; FB halves alpha to its floor
    and reports a stall with a large mean-field residual (the FB residual alone, ~alpha
    times smaller, would have passed)."""
    lay = M.Layout([("visible", M.Units(5, 2))])
    A = 3.0 * torch.tensor([[1.0, -1.0] * 5])
    Phi = 3.0 / 1.9 * M.monotone_phi(A, lay, 0.1, cap=2.0)[0]
    assert _lam_t(Phi, lay) == pytest.approx(3.0, abs=1e-10)
    p = M.Problem(Phi, 0.1 * torch.arange(10.0), lay, cap=2.0)
    z, info = M.solve_fb(p, p.random_start(8, torch.Generator().manual_seed(0)), alpha=0.5,
                         anderson=0, tol=1e-8, max_iter=5000)
    assert info["stalled"] and info["alpha"] == 0.5 * 2.0 ** -10
    assert torch.equal(info["res"], p.residual(z)) and float(info["res"].max()) > 1e-2


def test_anderson_with_no_movement_float32():
    """Anderson's weights are undefined when every step is zero (float32 underflow of the
    old ``1e-300`` clamp made the solve singular): the plain step is taken instead."""
    x0 = torch.rand(3, 6, dtype=torch.float32, generator=torch.Generator().manual_seed(0))
    x, info = M.iterate(lambda v: v.clone(), x0, anderson=3, tol=0.0, max_iter=5)
    assert torch.equal(x, x0) and info["iters"] == 5
    # rows that do move still get Anderson's solution: a linear map solved exactly
    A = 0.5 * torch.eye(6, dtype=torch.float32)
    c = torch.arange(6, dtype=torch.float32)

    def f(v):
        return v @ A + c

    x, info = M.iterate(f, x0, anderson=3, tol=1e-6, max_iter=40)
    assert torch.allclose(x, (2 * c).expand(3, -1), atol=1e-5)
    _, plain = M.iterate(f, x0, anderson=0, tol=1e-6, max_iter=40)
    assert info["iters"] <= 8 < 15 <= plain["iters"]  # the plain step halves the error


def test_infer_adjoint_uses_the_final_alpha_and_warns(monkeypatch):
    """The forward solve halves alpha (plain mean-field oscillates here); the implicit
    adjoint gets that final step, and its gradient equals the dense implicit solve's. An
    adjoint stopped short of tol warns."""
    m = M.MonotoneDBM(visible=M.units(5, 2), cap=1.0, alpha=1.0, anderson=0, rank=1,
                      margin=0.01, seed=0, tol=1e-10, max_iter=3000)
    with torch.no_grad():
        m.A.copy_(3.0 * torch.tensor([[1.0, -1.0] * 5]))
        m.b.copy_(0.1 * torch.arange(10.0))
    seen = []
    real = M.implicit_fixed_point

    def spy(p, z, **kw):
        seen.append(kw["alpha"])
        return real(p, z, **kw)

    monkeypatch.setattr(M, "implicit_fixed_point", spy)
    x = torch.full((4, 5), -1)
    x[:, 0] = torch.tensor([0, 1, 0, 1])
    z, info, p = m.infer(x)
    assert info["alpha"] < 1.0 and seen == [info["alpha"]]
    (g,) = torch.autograd.grad(z[:, 2:].square().sum(), m.A, retain_graph=True)
    zd = real(p, z.detach(), alpha=info["alpha"], direct=True)
    (gd,) = torch.autograd.grad(zd[:, 2:].square().sum(), m.A, retain_graph=True)
    assert torch.allclose(g, gd, atol=1e-7, rtol=1e-6)
    zw = real(p, z.detach(), alpha=info["alpha"], anderson=0, tol=1e-14, max_iter=2)
    with pytest.warns(RuntimeWarning, match="implicit adjoint"):
        torch.autograd.grad(zw[:, 2:].square().sum(), m.A)


def test_effective_coupling_in_O_d2_equals_the_projector_forms_and_is_cached():
    m = _tiny(cap=2.0, init_scale=3.0)
    p = m.problem(_data()[0])
    lay = m.layout
    P = _projector(lay)
    qbar = torch.cat([torch.full((k,), 1.0 / k) for k in lay.unit_k])
    Pe, be = p.effective()
    Phi = p.Phi.detach()
    assert torch.allclose(Pe, P @ Phi @ P, atol=1e-12)
    assert torch.allclose(be, p.b + P @ Phi @ qbar, atol=1e-12)
    assert torch.equal(lay.uniform(), qbar)
    q = M._detached(p)
    q.cholesky(0.5)
    assert q.effective()[0] is Pe and 0.5 in p._chol  # shared with the detached copy


def test_layout_builds_on_the_cpu_whatever_the_default_device():
    """Layout's index tensors and projectors are built on the CPU and then moved, so a
    meta (or CUDA) default device does not mix devices."""
    with torch.device("meta"):
        lay = M.Layout([("visible", M.Units(3, 3)), ("label", M.Units(1, 2))])
        P = lay.centring("cpu", torch.float64)
        Q = lay.tangent_basis("cpu", torch.float64)
        u = lay.uniform("cpu", torch.float64)
        assert lay.centring("meta").device.type == "meta"
    assert torch.allclose(P, _projector(lay), atol=1e-14)
    assert torch.allclose(Q @ Q.T, P, atol=1e-12)
    assert torch.equal(u, torch.tensor([1 / 3] * 9 + [0.5] * 2))


@pytest.mark.parametrize("cap", [1.0, 2.0])
def test_monotone_phi_gradient_is_finite_at_zero(cap):
    lay = M.Layout([("visible", M.Units(3, 2)), ("hidden", M.Units(2, 3))])
    A = torch.zeros(4, lay.d, requires_grad=True)
    Phi, s = M.monotone_phi(A, lay, 0.01, cap=cap)
    assert float(s.detach()) == 1.0
    (g,) = torch.autograd.grad(Phi.sum() + s, A)
    assert torch.isfinite(g).all()


@pytest.mark.parametrize("visible, label, pixels, labels, message, line", [
    ("categorical(63, 4)", "categorical(1, 10)", 1, [0, 1],
     "visible declares 63 units per row, but the data have 64 (shape [2, 64])", 4),
    ("categorical(64, 2)", "categorical(1, 10)", 3, [0, 1],
     "visible units take states 0..1 (NaN for a missing value), but the data hold", 4),
    # an int label has no missing value: no NaN in the message
    ("categorical(64, 4)", "categorical(1, 5)", 1, [0, 9],
     "label units take states 0..4, but the data hold 0..9", 5),
    # -1 is not a missing label (it indexed out of range, unlocated)
    ("categorical(64, 4)", "categorical(1, 5)", 1, [0, -1],
     "label units take states 0..4, but the data hold -1", 5),
    ("categorical(64, 4)", "categorical(1, 10)", 7, [0, 1],
     "visible units take states 0..3 (NaN for a missing value), but the data hold 0..7", 4),
    ("categorical(64, 4)", "categorical(1, 10)", 1.5, [0, 1],
     "visible units take whole-number states 0..3 (NaN for a missing value), but the data "
     "hold 1.5", 4),
])
def test_data_that_do_not_fit_the_units_are_located_errors(visible, label, pixels, labels,
                                                           message, line):
    import ppl

    src = (f"model D(pixels: real[N, 64], label: int[N]) {{\n"
           f"  m = monotone_dbm(visible={visible}, hidden=[categorical(4, 2)],\n"
           f"                   label={label})\n"
           f"  pixels ~ m.visible\n  label ~ m.label\n}}\n")
    data = {"pixels": [[float(pixels)] * 64, [0.0] * 64], "label": labels}
    with pytest.raises(ppl.BdlError) as e:
        ppl.compile(src, "d.bdl").fit(data, infer="map", steps=1, dtype="float32")
    text = e.value.render()
    assert f"d.bdl:{line}:3: error: monotone_dbm: {message}" in text, text
    assert "Trace Shapes" not in text


def test_out_of_range_pixels_report_the_given_values_not_the_missing_code():
    """NaN (missing) is -1 inside; the message gave "-1..5" for pixels 0..5 with gaps."""
    import ppl

    src = ("model D(pixels: real[N, 64], label: int[N]) {\n"
           "  m = monotone_dbm(visible=categorical(64, 4), label=categorical(1, 10))\n"
           "  pixels ~ m.visible\n  label ~ m.label\n}\n")
    data = {"pixels": [[float("nan")] * 63 + [5.0], [2.0] * 64], "label": [0, 1]}
    with pytest.raises(ppl.BdlError) as e:
        ppl.compile(src, "d.bdl").fit(data, infer="map", steps=1, dtype="float32")
    assert ("d.bdl:3:3: error: monotone_dbm: visible units take states 0..3 (NaN for a "
            "missing value), but the data hold 2..5\n") in e.value.render()


@pytest.mark.parametrize("coupling", ["dense", "conv"])
def test_layered_pattern_with_one_group_is_located_at_pattern(coupling):
    """pattern="layered" on a model with the visible group alone has no pair of
    consecutive groups to couple: the runtime's ArgumentError names the argument, so the
    language puts the caret on the argument's value (line 3, the column of `"layered"`)."""
    import ppl

    opt = f'coupling="{coupling}", pattern="layered"'
    src = ("model D(pixels: real[N, 64]) {\n"
           "  m = monotone_dbm(visible=categorical(64, 2),\n"
           f"                   {opt})\n"
           "  pixels ~ m.visible\n}\n")
    data = {"pixels": [[1.0] * 64, [0.0] * 64]}
    with pytest.raises(ppl.BdlError) as e:
        ppl.compile(src, "d.bdl").fit(data, infer="map", steps=1, dtype="float32")
    text = e.value.render()
    col = 20 + opt.index('"layered"')
    assert f"d.bdl:3:{col}: error: pattern='layered' needs at least two groups" in text, text


# ---- the evidence gain ---------------------------------------------------------------
def _gained(gain=2.5, **kw):
    """A cap-2 model beyond Feng et al.'s cap (init_scale 3) with an evidence gain,
    its per-pixel gains spread over [0.5, 6]."""
    m = _tiny(cap=2.0, init_scale=3.0, evidence_gain=gain, **kw)
    with torch.no_grad():
        g = torch.Generator().manual_seed(4)
        m.gain_visible.copy_(0.5 + 5.5 * torch.rand(m.gain_visible.shape, generator=g))
    return m


@pytest.mark.parametrize("clamp_label", [False, True])
def test_evidence_gain_unique_fixed_point_of_the_gained_field(clamp_label):
    """With gains up to 6 on the shown pixels and lambda_max(P Phi P) = 1.5, FB and PR
    reach one point from 5 random starts; on the free units it solves
    q = softmax(Phi (gamma-scaled clamped values + q) + b), computed here from the
    definition, and it minimises the free energy with that bias."""
    m = _gained()
    Phi = m.phi().detach()
    assert M.lambda_max_tangent(Phi, m.layout) > 1.4  # beyond Feng et al.'s cap
    x, y = _data()
    p = M._detached(m.problem(x, y if clamp_label else None))
    assert p.b.shape == (len(x), m.layout.d)
    ref = _fixed_point_from_starts(p, CAP2_SOLVES, seed=3)
    mask, val = p.clamp_mask, p.clamp_value
    assert torch.equal(ref[mask], val[mask])
    _, off, n, k = m.layout.segment("visible")
    scaled = ref.clone()
    gam = m.gain_visible.detach().expand(n, k).reshape(-1)
    vis = slice(off, off + n * k)
    scaled[:, vis] = torch.where(mask[:, vis], gam * ref[:, vis], ref[:, vis])
    field = scaled @ Phi + m.b.detach()
    soft = torch.cat([torch.softmax(s.reshape(len(x), -1, kk), -1).reshape(len(x), -1)
                      for s, kk in _segments(field, m.layout)], 1)
    assert torch.allclose(ref[~mask], soft[~mask], atol=1e-10)
    if clamp_label:  # only the pixels are scaled: a clamped label keeps its one-hot value
        _, lo, _, lk = m.layout.segment("label")
        assert torch.equal(ref[:, lo:lo + lk].argmax(1), y)

    def F(q):
        return (-0.5 * (q @ Phi * q).sum(1) - (q * p.b).sum(1)
                + (q * q.clamp_min(1e-300).log()).sum(1))

    g = torch.Generator().manual_seed(1)
    for t in (0.5, 0.1, 0.01):
        other = p.random_start(len(x), g)
        assert (F((1 - t) * ref + t * other) > F(ref)).all()
    # the gain matters: the ungained fixed point is elsewhere
    plain = M.Problem(Phi, m.b.detach(), m.layout, mask, val, cap=2.0)
    z1, _ = M.solve(plain, None, "pr", tol=1e-12, max_iter=3000)
    assert (z1 - ref).abs().max() > 0.05


def test_evidence_gain_one_is_the_plain_model():
    """``evidence_gain=1`` starts as the model without it: the same bias, fixed point and
    loss (the option only adds the learned gains)."""
    x, y = _data()
    a = _tiny(cap=2.0, init_scale=3.0, evidence_gain=1.0)
    b = _tiny(cap=2.0, init_scale=3.0)
    assert not hasattr(b, "gain_visible")
    shown = x >= 0
    xf = torch.where(shown, x, 1)
    la, _ = a.loss(xf, y, shown=shown, tol=1e-12, max_iter=3000)
    lb, _ = b.loss(xf, y, shown=shown, tol=1e-12, max_iter=3000)
    assert float(la.detach()) == pytest.approx(float(lb.detach()), abs=1e-12)
    assert torch.allclose(a.problem(x).b, b.b.detach().expand(len(x), -1), atol=0)


def test_evidence_gain_gradient_matches_finite_differences():
    """The implicit gradient of the loss reaches the gains (through the bias they set) and
    the coupling; both match central differences."""
    m = _gained(tol=1e-12, max_iter=3000)
    m.solver = "pr"
    _loss_gradient_matches_fd(m, [(m.gain_visible, (1, 0)), (m.gain_visible, (3, 0)),
                                  (m.A, (2, 4))])
    assert m.gain_visible.grad.abs().max() > 1e-3


def test_evidence_gain_validated():
    with pytest.raises(ValueError, match="evidence_gain must be a finite"):
        M.MonotoneDBM(visible=M.units(5, 3), hidden=[M.units(4, 2)], evidence_gain=float("nan"))


def test_benchmark_evidence_gain(tmp_path, bench):
    """``--evidence-gain G`` gives every model learned gains starting at G; training moves
    them, the monotone row stays within the cap, converges everywhere and is
    start-independent."""
    import argparse
    import json

    torch.set_default_dtype(torch.float32)
    mdbm = bench("mdbm_digits")
    ns = argparse.Namespace(
        observed=0.4, train_observed=None, tiers=1, margin=0.01, alpha=0.125, tol=1e-4,
        max_iter=50, mask="random", seed=0, readout=10.0, label_readout=1.0, rank=None,
        pattern="full", cap=2.0, coupling="dense", device=torch.device("cpu"),
        evidence_gain=3.0)
    for kind in ("monotone", "baseline"):
        assert torch.equal(mdbm.build(kind, 4, 8, ns).gain_visible, torch.full((64, 1), 3.0))
    out = tmp_path / "out.json"
    mdbm.main(["--train", "32", "--test", "16", "--batch", "16", "--epochs", "1",
               "--hidden", "8", "--fractions", "0.4", "--solver-iters", "30",
               "--models", "monotone", "--evidence-gain", "3", "--no-solver-table",
               "--no-hidden-use", "--json", str(out)])
    r = json.loads(out.read_text())["monotone"]
    assert r["lambda_max_PPhiP"] <= 1.99 + 1e-5
    assert r["converged_frac"] == 1.0 and r["max_disagreement"] < 1e-4
    assert r["gain_min"] <= r["gain_mean"] <= r["gain_max"] and r["gain_min"] != r["gain_max"]


# ---- what the hidden tier can add to the label's evidence (construct page) -----------
def _label_sensitivity(m, x, eps=1e-6):
    """Finite-difference Jacobian of the label's field ``(Phi q* + b)_label`` in the
    clamped values of the shown pixels, with the label clamped at its own fixed-point
    value (the open-loop sensitivity through the free units), and the pieces of the
    linearised formula: ``(Jac, A, s, free, shown, label coordinates, q*)``."""
    p = M._detached(m.problem(x))
    z, _ = M.solve(p, None, "pr", alpha=0.5, tol=1e-14, max_iter=5000)
    _, ol, _, kl = m.layout.segment("label")
    y = torch.arange(ol, ol + kl)
    mask = p.clamp_mask.clone()
    mask[:, y] = True
    val = torch.where(mask, torch.where(p.clamp_mask, p.clamp_value, z), 0.0)
    shown = p.clamp_mask[0].nonzero()[:, 0]
    jac = torch.zeros(kl, len(shown))
    for j, c in enumerate(shown):
        f = []
        for sgn in (1.0, -1.0):
            v = val.clone()
            v[0, c] += sgn * eps
            q = M.Problem(p.Phi, p.b, p.layout, mask, v, p.cap)
            zq, _ = M.solve(q, z, "pr", alpha=0.5, tol=1e-14, max_iter=5000)
            f.append(q.field(zq)[0, y])
        jac[:, j] = (f[0] - f[1]) / (2 * eps)
    free = (~mask[0]).nonzero()[:, 0]
    A = m.a_matrix().detach()
    s = M.monotone_phi(A, m.layout, m.margin, m.cap)[1]
    return jac, A, float(s), free, shown, y, z[0]


@pytest.mark.parametrize("pattern", ["full", "layered"])
def test_label_evidence_is_the_direct_coupling_contracted(pattern):
    """Eliminating the free units (hidden tiers, hidden pixels) from the linearised
    mean-field equations, the label's sensitivity to the shown pixels is
    ``-s A_y^T R A_C`` with ``R = (I + s A_F G A_F^T)^{-1}``, ``G = (I - s J_F D_F)^{-1} J_F``
    (``J_F`` the softmax Jacobians at q*): ``0 < R <= I``, so whatever the free units do
    it is bounded by ``s ||A_y u|| ||A_C w||``, the direct Gram coupling; with the
    layered A (``A_y^T A_C = 0``) it is the off-diagonal part of ``R``, at most half
    of that bound."""
    m = _tiny(cap=2.0, init_scale=2.5, pattern=pattern)
    x, _ = _data(B=1, seed=5)
    jac, A, s, F, C, y, q = _label_sensitivity(m, x)
    lay = m.layout
    J = torch.zeros(lay.d, lay.d)
    for i in range(lay.n_units):
        idx = (lay.owner == i).nonzero()[:, 0]
        J[idx[:, None], idx] = torch.diag(q[idx]) - torch.outer(q[idx], q[idx])
    D = (A.T @ A) * lay.block_mask()
    JF, DF, AF = J[F][:, F], D[F][:, F], A[:, F]
    G = torch.linalg.solve(torch.eye(len(F)) - s * JF @ DF, JF)
    assert torch.allclose(G, G.T, atol=1e-10) and torch.linalg.eigvalsh(G)[0] > -1e-10
    R = torch.linalg.inv(torch.eye(A.shape[0]) + s * AF @ G @ AF.T)
    formula = -s * A[:, y].T @ R @ A[:, C]
    # only moves within the shown pixels' simplices are meaningful (the PR solver works
    # with P Phi P, which ignores a per-unit constant added to a clamped value)
    PC = lay.centring()[C][:, C]
    jac, formula = jac @ PC, formula @ PC
    assert jac.abs().max() > 1e-3
    assert torch.allclose(jac, formula, atol=1e-7)
    e = torch.linalg.eigvalsh(0.5 * (R + R.T))
    assert e[0] > 0 and e[-1] <= 1 + 1e-12
    # the bound, on the centred label directions (per-unit constants do not matter)
    Py = torch.eye(len(y)) - 1.0 / len(y)
    bound = s * torch.linalg.matrix_norm(A[:, y] @ Py, 2) * torch.linalg.matrix_norm(
        A[:, C] @ PC, 2)
    direct = s * torch.linalg.matrix_norm(Py @ A[:, y].T @ A[:, C] @ PC, 2)
    got = torch.linalg.matrix_norm(Py @ jac, 2)
    assert got <= bound + 1e-8
    # per shown pattern w (centred): |f_y change| <= sqrt(c - m) sqrt(w^T (s D - Phi)_CC w)
    # <= sqrt(c - m) sqrt((c - m)||w||^2 - w^T Phi_CC w): a property of the class, since
    # every unit block has s ||P (A^T A)_ii P|| <= c - m; the pixels' own coupling along w
    # enters with a minus sign
    Phi = m.phi().detach()
    cm = m.cap - m.margin
    for w in torch.randn(5, len(C), generator=torch.Generator().manual_seed(6)):
        w = PC @ w
        lhs = float((Py @ jac @ w).norm())
        rhs = math.sqrt(cm * (cm * float(w @ w) - float(w @ Phi[C][:, C] @ w)))
        assert 1e-6 < lhs <= rhs + 1e-8
    if pattern == "layered":
        assert direct == 0 and got > 1e-3 and got <= 0.5 * bound + 1e-8
    else:
        assert direct > 0


# ---- option errors (audit): located at `bdl check` for literals, at run time otherwise ----
_OPT_SRC = ("model D(pixels: real[N, 64], label: int[N]) {{\n"
            "  m = monotone_dbm(visible=categorical(64, 4), hidden=[categorical(4, 2)],\n"
            "                   label=categorical(1, 10), {opt})\n"
            "  pixels ~ m.visible\n  label ~ m.label\n}}\n"
            "infer map(steps=1)\n")


@pytest.mark.parametrize("opt, message, hint", [
    ('solver="fbb"', "argument 'solver' of monotone_dbm must be one of fb, pr, mf", "fb"),
    ('coupling="convv"', "argument 'coupling' of monotone_dbm must be one of dense, conv",
     "conv"),
    ('pattern="layerd"', "argument 'pattern' of monotone_dbm must be one of full, layered",
     "layered"),
    ('mask="pach"', "argument 'mask' of monotone_dbm must be one of random, patch", "patch"),
    ("rank=0", "argument 'rank' of monotone_dbm must be at least 1, got 0", None),
    # Builtin.flags / Builtin.integers: monotone="no" was a true string (the monotone
    # model trained); rank=2.5 ran rank 2
    ('monotone="no"', 'argument \'monotone\' of monotone_dbm must be true or false, got "no"',
     None),
    ("rank=2.5", "argument 'rank' of monotone_dbm must be a whole number, got 2.5", None),
    ("max_iter=10.5", "argument 'max_iter' of monotone_dbm must be a whole number, got 10.5",
     None),
])
def test_option_mistakes_are_located_at_check(tmp_path, capsys, opt, message, hint):
    """They were a KeyError / ZeroDivisionError at run time (internal errors, exit 3), an
    error at run time only, or no error at all."""
    from ppl.cli import main

    f = tmp_path / "d.bdl"
    f.write_text(_OPT_SRC.format(opt=opt))
    assert main(["check", str(f)]) == 1
    err = capsys.readouterr().err
    col = _OPT_SRC.splitlines()[2].index("{opt}") + 1 + opt.index("=") + 1
    assert f"d.bdl:3:{col}: error: {message}" in err, err
    if hint:
        assert f"note: did you mean '{hint}'?" in err, err


@pytest.mark.parametrize("opt", ["solver=pr", 'solver="pr"', "pattern=layered",
                                 "coupling=dense", "mask=patch"])
def test_word_options_take_bare_words_and_strings(opt):
    import ppl

    m = ppl.compile(_OPT_SRC.format(opt=opt), "d.bdl")
    word = opt.split("=")[1].strip('"')
    assert f'{opt.split("=")[0]}="{word}"' in m.source or f"'{word}'" in m.source


def _run_error(tmp_path, capsys, opt) -> str:
    from ppl.cli import main

    f = tmp_path / "d.bdl"
    f.write_text(_OPT_SRC.format(opt=opt))
    (tmp_path / "d.data.json").write_text(
        '{"pixels": [' + ", ".join(["[" + ", ".join(["1.0"] * 64) + "]"] * 2)
        + '], "label": [0, 1]}')
    assert main(["check", str(f)]) == 0
    capsys.readouterr()
    assert main(["run", str(f), "--out", str(tmp_path / "r")]) == 1
    return capsys.readouterr().err


@pytest.mark.parametrize("opt, message", [
    ("rank=5 / 2", "monotone_dbm: rank must be a whole number, got 2.5"),
    ("max_iter=21 / 2", "monotone_dbm: max_iter must be a whole number, got 10.5"),
])
def test_computed_option_fractions_are_located_at_run(tmp_path, capsys, opt, message):
    """A computed fraction passes the check and is refused when the model first runs."""
    err = _run_error(tmp_path, capsys, opt)
    col = _OPT_SRC.splitlines()[2].index("{opt}") + 1 + opt.index("=") + 1
    assert f"d.bdl:3:{col}: error: {message}" in err, err


def test_hidden_as_a_number_says_it_takes_a_list(tmp_path, capsys):
    src = _OPT_SRC.replace("hidden=[categorical(4, 2)]", "hidden=64")
    from ppl.cli import main

    f = tmp_path / "d.bdl"
    f.write_text(src.format(opt="margin=0.01"))
    (tmp_path / "d.data.json").write_text(
        '{"pixels": [' + ", ".join(["[" + ", ".join(["1.0"] * 64) + "]"] * 2)
        + '], "label": [0, 1]}')
    assert main(["run", str(f), "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    col = src.splitlines()[1].index("hidden=64") + 1 + len("hidden=")
    assert (f"d.bdl:2:{col}: error: monotone_dbm: hidden takes a list of unit groups, e.g. "
            "hidden=[categorical(64, 4)] (one group per hidden tier), not 64") in err, err


def test_python_options_are_checked_as_the_language_does():
    vis = M.units(4, 2)
    with pytest.raises(M.ArgumentError, match=r"solver must be one of fb, pr, mf, got "
                                              r"'fbb' \(did you mean 'fb'\?\)") as e:
        M.MonotoneDBM(vis, solver="fbb")
    assert e.value.argument == "solver"
    with pytest.raises(M.ArgumentError, match="rank .* must be at least 1, got 0"):
        M.MonotoneDBM(vis, rank=0)
    with pytest.raises(M.ArgumentError, match="monotone takes true or false"):
        M.MonotoneDBM(vis, monotone="false")
    assert M.MonotoneDBM(vis, monotone=0, rank=3.0).monotone is False
    with pytest.raises(M.ArgumentError, match="solver must be one of"):
        M.solve(M.MonotoneDBM(vis, seed=0).problem(torch.full((1, 4), -1)), solver="x")


def test_fitted_module_from_params_predicts_as_the_fit(tmp_path):
    """docs/constructs/monotone_dbm.md: a MonotoneDBM built with the model file's
    arguments and loaded with the network's params (from fit.params or a run folder's
    params.pt) predicts exactly as the fitted model's own module."""
    import ppl
    from ppl.runtime import nn as rt_nn

    src = ("model D(pixels: real[N, 4], label: int[N]?) {\n"
           "  m = monotone_dbm(visible=categorical(4, 2), hidden=[categorical(3, 2)],\n"
           "                   label=categorical(1, 3), margin=0.01)\n"
           "  pixels ~ m.visible\n  label ~ m.label\n}\n")
    pixels = np.random.default_rng(0).integers(0, 2, size=(6, 4)).astype(float).tolist()
    fit = ppl.compile(src, "d.bdl").fit({"pixels": pixels, "label": [0, 1, 2, 0, 1, 2]},
                                        infer="map", steps=3, seed=0)
    (own,) = [v for v in rt_nn._CACHE.values() if isinstance(v, M.MonotoneDBM)]
    x = torch.tensor(pixels, dtype=own.b.dtype)
    x[0, 1] = float("nan")
    want = own.predict(x)
    # what a run folder's params.pt holds (ppl.io.run_folder.write_run)
    torch.save({k: v.cpu() for k, v in fit.params.items()}, tmp_path / "params.pt")
    for params in (fit.params, torch.load(tmp_path / "params.pt", weights_only=True)):
        net = M.MonotoneDBM(visible=M.units(4, 2), hidden=[M.units(3, 2)],
                            label=M.units(1, 3), margin=0.01)
        net.load_state_dict({k.split("$$$", 1)[1]: v for k, v in params.items()
                             if k.startswith("m$$$")})
        got = net.to(own.b.dtype).predict(x)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert not torch.equal(M.MonotoneDBM(visible=M.units(4, 2), hidden=[M.units(3, 2)],
                                         label=M.units(1, 3), margin=0.01,
                                         seed=1).to(own.b.dtype).predict(x)[1], want[1])


def test_pixel_logreg_epochs_sees_one_fresh_masked_view_per_epoch(bench, monkeypatch):
    from types import SimpleNamespace

    mdbm = bench("mdbm_digits")
    args = SimpleNamespace(mask="random", seed=0, batch=8, K=3)
    X = torch.randint(0, 3, (10, 6), generator=torch.Generator().manual_seed(1))
    Y = X[:, 0]
    seen = {}

    def capture(Ftr, Ytr, Fte, Yte):
        seen.update(F=Ftr, Y=Ytr)
        return 0.5

    monkeypatch.setattr(mdbm, "_logreg_acc", capture)
    mdbm.pixel_logreg(X, Y, X, Y, 0.5, args, masks=3)
    F, oh = seen["F"].reshape(3, 10, 6, 3), torch.nn.functional.one_hot(X, 3)
    assert torch.equal(seen["Y"], Y.repeat(3))
    for view in F:  # each view: the one-hot pixels under its own mask
        shown = view.sum(-1) > 0
        assert torch.equal(view, oh * shown[..., None])
        assert 0 < shown.sum() < shown.numel()
    assert not torch.equal(F[0], F[1]) and not torch.equal(F[1], F[2])
    # the first view is the one-view row's (pixel_logreg, unchanged)
    mdbm.pixel_logreg(X, Y, X, Y, 0.5, args)
    assert torch.equal(seen["F"].reshape(10, 6, 3), F[0])


# ---- --label-init logreg: the visible-label coupling from a logistic regression -------
@pytest.mark.parametrize("coupling,init_scale", [("dense", 0.3), ("dense", 30.0),
                                                 ("conv", 1.0)])
def test_label_init_from_logreg_places_the_readout_in_the_class(bench, coupling,
                                                                  init_scale):
    """``init_label_from_logreg`` sets ``Phi_yC diag(gamma) = t W`` and ``b_y = t c0``
    exactly, the global scale ``s`` becomes the other units' (so the margin holds), and
    ``t`` is the largest for which the label does not set ``s``: its block then equals
    the largest other block, or ``c - m`` where ``s = 1``; ``tau_y^2 = 1/t``."""
    mdbm = bench("mdbm_digits")
    kw = {"coupling": "conv", "kernel": 3, "channels": 4} if coupling == "conv" else {}
    m = M.MonotoneDBM(visible=M.units(4, 3), hidden=[M.units(4, 2)], label=M.units(1, 4),
                      margin=0.01, cap=2.0, seed=3, init_scale=init_scale,
                      evidence_gain=2.0, **kw)
    with torch.no_grad():
        m.gain_visible.copy_(torch.tensor([[1.5], [2.0], [2.5], [3.0]]))
    lay = m.layout
    _, voff, nv, k = lay.segment("visible")
    _, loff, _, kl = lay.segment("label")
    g = torch.Generator().manual_seed(4)
    W, c0 = torch.randn(kl, nv * k, generator=g), torch.randn(kl, generator=g)
    A0 = m.a_matrix().detach().clone()
    t = mdbm.init_label_from_logreg(m, W, c0)
    A = m.a_matrix().detach()
    Phi, s = M.monotone_phi(A, lay, m.margin, m.cap)
    gain = m.gain_visible.detach().repeat_interleave(k, 0)[:, 0]
    assert torch.allclose(Phi[loff:loff + kl, voff:voff + nv * k] * gain, t * W, atol=1e-10)
    assert torch.allclose(m.b.detach()[loff:], t * c0, atol=1e-12)
    assert float(m.tau_label.detach()) ** 2 == pytest.approx(1.0 / t)
    # only the label's columns of A changed; the margin holds
    other = torch.ones(A.shape[1], dtype=torch.bool)
    other[loff:loff + kl] = False
    assert torch.equal(A[:, other], A0[:, other])
    assert m.check_margin() >= m.margin - 1e-9
    # t is the largest: the label's tangent block sits at max(largest other block, c - m)

    def block(idx, kk):
        P = torch.eye(kk) - 1.0 / kk
        return float(torch.linalg.matrix_norm(P @ (A.T @ A)[idx][:, idx] @ P, ord=2))

    others = [block(slice(off + j * kk, off + (j + 1) * kk), kk)
              for name, off, n, kk in lay.segments if name != "label" for j in range(n)]
    want = max(max(others), m.cap - m.margin)
    assert block(slice(loff, loff + kl), kl) == pytest.approx(want, rel=1e-9)
    assert float(s) == pytest.approx(min(1.0, (m.cap - m.margin) / max(others)), rel=1e-9)
    assert (float(s) < 0.99) == (init_scale == 30.0)  # both cases are exercised


def test_label_init_needs_a_visible_label_block(bench):
    mdbm = bench("mdbm_digits")
    m = M.MonotoneDBM(visible=M.units(4, 3), hidden=[M.units(4, 2)], label=M.units(1, 4),
                      margin=0.01, cap=2.0, seed=3, pattern="layered")
    with pytest.raises(ValueError, match="visible-label block"):
        mdbm.init_label_from_logreg(m, torch.zeros(4, 12), torch.zeros(4))


def test_pixel_logreg_is_scored_on_the_models_test_masks(bench, monkeypatch):
    """The linear reference is scored on the masks :func:`evaluate` scores the models on
    (one per batch, drawn in turn), not on a draw of its own."""
    from types import SimpleNamespace

    mdbm = bench("mdbm_digits")
    args = SimpleNamespace(mask="random", seed=0, batch=8, K=3)
    g = torch.Generator().manual_seed(5)
    X, Y = torch.randint(0, 3, (20, 6), generator=g), torch.randint(0, 3, (20,), generator=g)
    seen, shown = {}, []

    class Recorder:  # evaluate's model: records which pixels each batch shows
        solver, tol = "fb", 1e-4

        def predict(self, inp, solver=None):
            shown.append(inp >= 0)
            B = inp.shape[0]
            return (torch.full((B, 6, 3), 1 / 3), torch.full((B, 3), 1 / 3),
                    {"res": torch.zeros(B)})

    mdbm.evaluate(Recorder(), X, Y, 0.5, args)
    monkeypatch.setattr(mdbm, "_logreg_acc", lambda *a: seen.update(Fte=a[2]) or 0.5)
    mdbm.pixel_logreg(X, Y, X, Y, 0.5, args)
    assert [len(s) for s in shown] == [8, 8, 4]
    want = torch.nn.functional.one_hot(X, 3) * torch.cat(shown)[..., None]
    assert torch.equal(seen["Fte"], want.reshape(20, -1))
    assert 0 < torch.cat(shown).sum() < 120
