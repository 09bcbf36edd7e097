"""fractional_sde's closed form on times written to a few decimals (a CSV's times): the
Euler grid it picks, which times count as grid points (1% of a step,
``fs.GRID_TOL``), and that a fit on rounded times is the fit on the grid they round."""

import json
import math
from pathlib import Path

import pyro
import pytest
import torch
from conftest import default_dtype

import ppl
from ppl.runtime import fractional_sde as fs

ROOT = Path(__file__).resolve().parent.parent
FOU = json.loads((ROOT / "examples" / "fou.data.json").read_text())

_SRC = """
model F(t: real[T], idx: int[N], y: real[N]) {
  param theta: real<lower=0> = 1.3
  param mu: real = 0.2
  z ~ fractional_sde(times=t, drift=(x, s) => -theta * (x - mu), diffusion=0.9, K=5,
                     x0=Normal(0, 1), control=optimal ELBO)
  y ~ Normal(z[idx, 0], 0.1)
}
"""


def _fresh():
    from ppl.runtime import reset_networks
    pyro.clear_param_store()
    reset_networks()


def _objective(times, elbo="", seed=0):
    """The objective svi maximises (Trace_ELBO, empty guide) of the FOU data on ``times``
    in float64 at the starting parameters (H = 0.5), and the path it drew."""
    with default_dtype(torch.float64):
        m = ppl.compile(_SRC.replace(" ELBO", elbo))
        kw = m.bind({"t": times, "idx": FOU["idx"], "y": FOU["y"]})
        _fresh()
        torch.manual_seed(seed)
        tr = pyro.poutine.trace(m.pyro_model).get_trace(**kw)
        return float(tr.log_prob_sum().detach()), tr.nodes["z"]["value"]


def _rounded(t0: float, span: float, T: int = 60, digits: int = 5):
    exact = t0 + span * torch.linspace(0, 1, T, dtype=torch.float64)
    return exact, torch.round(exact * 10 ** digits) / 10 ** digits


def test_rounded_uniform_times_take_the_uniform_grid():
    """The example's times, linspace(0, 1, 60) to 5 decimals (gaps 0.01694 and 0.01695):
    the default step is the uniform gap 1/59 halved (gamma_max 20: 0.25/20 = 0.0125 is
    below the gap), not the smallest gap's 0.01694/2, whose grid drifts off the later
    times; every time is the point 2 i, at most 5.8e-4 of a step from it. (The 118 steps
    add up to 1 - 1.9e-15, so the solver ends on a sliver step to t[59] = 1: 120 points,
    the same as on the exact times.)"""
    t = torch.tensor(FOU["t"], dtype=torch.float64)
    dt = fs.closed_form_dt(t, None, 20.0)
    assert dt == pytest.approx(1 / 118, rel=1e-14)
    pts, at, off = fs.grid_points(t, dt)
    assert off == [] and len(pts) == 120 and int(at[-1]) == 119
    assert torch.equal(at[:-1], 2 * torch.arange(59))
    dev = float((pts[at] - t).abs().max()) / dt
    assert 5.7e-4 < dev < 5.9e-4                     # 4.9e-6 / 0.00847
    # the smallest gap's grid: t[59] = 1 lies 0.3 of a step past the 118th point
    small = float((t[1:] - t[:-1]).min()) / 2
    assert fs.grid_points(t, small)[2]
    # float32 times (the model's default dtype) give the same step
    assert fs.closed_form_dt(t.float(), None, 20.0) == pytest.approx(1 / 118, rel=1e-12)


def test_rounded_lattice_with_left_out_times_and_the_tolerance():
    """Multiples of 1/60 with some left out, to 5 decimals: the lattice's gap 1/60 (the
    uniform gap span / (T - 1) is not it, the smallest gap drifts). The tolerance is 1% of
    a step: one time moved by 0.9% of a step is still its point, by 1.1% it is not."""
    k = torch.tensor([0, 1, 2, 3, 5, 6, 9, 10, 11, 20, 21, 40, 41, 42, 59, 60])
    t = torch.round(k.double() / 60 * 1e5) / 1e5
    dt = fs.closed_form_dt(t, None, 20.0)
    assert dt == pytest.approx(1 / 120, rel=1e-14)
    pts, at, _ = fs.grid_points(t, dt)          # (a sliver step to t[-1] = 1 at the end)
    assert torch.equal(at[:-1], 2 * k[:-1]) and int(at[-1]) == len(pts) - 1 == 121
    for frac, ok in ((0.009, True), (0.011, False)):
        moved = t.clone()
        moved[6] = 18 * dt + frac * dt         # t[6] = 9/60, its point 18
        got, why = fs.closed_form_grid(moved, dt, 20.0)
        assert (got == dt) == ok and (why is None) == ok, why


def test_rounded_times_give_the_exact_grids_objective():
    """On linspace(0, 1, 60) to 5 decimals (the example's t) the closed form observes the
    same grid points as on the exact times, so control=optimal's objective (log p) is
    equal, to float round-off; and the Monte Carlo route (elbo=mc) solves on the times
    moved onto their points, so under one seed its objective and path are the exact
    times' bit for bit (interpolating at the rounded times would differ by ~6e-4 of a
    step's increment)."""
    exact = torch.linspace(0, 1, 60, dtype=torch.float64)
    rounded = torch.tensor(FOU["t"], dtype=torch.float64)
    a, _ = _objective(exact)
    b, _ = _objective(rounded)
    assert abs(a - b) < 1e-9 * abs(a) and math.isfinite(a)
    a, za = _objective(exact, ", elbo=mc", seed=3)
    b, zb = _objective(rounded, ", elbo=mc", seed=3)
    assert a == b and torch.equal(za, zb)
    # and the draw is not the same on another seed: the comparison can fail
    assert _objective(rounded, ", elbo=mc", seed=4)[0] != b


def test_rounded_end_times_move_the_objective_by_its_span_sensitivity():
    """t = 0.123456 + 1.234567 linspace(0, 1, 60) to 5 decimals: t0 moves by +4.0e-6 and
    t[59] by -3.0e-6, so the span shrinks by 7.0e-6 and the step with it. The objective
    on the rounded times is the one on the exact uniform grid between the rounded ends
    (to 1e-9: the inner times' rounding costs nothing), and it differs from the exact
    times' by the span's first-order effect dL/dspan * dspan (dL/dspan by central
    differences on exact grids, h = 1e-4; 66.9 nats per unit here): within 1% of it
    (-4.69e-4 nats), and nonzero."""
    exact, rounded = _rounded(0.123456, 1.234567)
    dspan = float((rounded[-1] - rounded[0]) - (exact[-1] - exact[0]))
    assert dspan == pytest.approx(-7.0e-6, abs=1e-12)
    base, _ = _objective(exact)
    got, _ = _objective(rounded)
    ends = torch.linspace(float(rounded[0]), float(rounded[-1]), 60, dtype=torch.float64)
    assert abs(got - _objective(ends)[0]) < 1e-9 * abs(got)
    h = 1e-4
    up, _ = _objective(_rounded(0.123456, 1.234567 + h)[0])
    down, _ = _objective(_rounded(0.123456, 1.234567 - h)[0])
    slope = (up - down) / (2 * h)
    want = slope * dspan
    assert abs(want) > 1e-6                      # the span matters at this size
    assert abs((got - base) - want) < 0.01 * abs(want), (got - base, want)


def test_a_time_off_the_grid_is_refused_with_a_located_error():
    """One time moved by 0.3 of a gap (0.4 of a step from the nearest point): the fit
    stops with an error at control=optimal naming the time; the runtime closed forms
    refuse it too, and two times on one grid point (a gap under a step) likewise."""
    t = list(FOU["t"])
    t[7] += 0.3 / 59
    m = ppl.compile(_SRC.replace(" ELBO", ""))
    with pytest.raises(ppl.BdlError, match="not all points of the Euler grid") as e:
        m.fit({"t": t, "idx": FOU["idx"], "y": FOU["y"]}, infer="svi", steps=1, samples=1)
    msg = str(e.value)
    assert "t[7] = 0.123725 is 0.4 of a step (dt = 0.00847458)" in msg
    lines = msg.splitlines()
    at = next(i for i, ln in enumerate(lines) if ln.strip().startswith("^"))
    assert lines[at - 1][lines[at].index("^"):].startswith("optimal")
    tt = torch.tensor(t, dtype=torch.float64)
    prior = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64),
                                       torch.tensor(1.0, dtype=torch.float64))
    y = torch.zeros(60, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"posterior_control: every time must be an Euler "
                                         r"grid point, and t\[7\]"):
        fs.posterior_control(tt, y, 0.1, fs.LinearDrift.fou(1.3, 0.2), 0.9, 0.5, prior,
                             dt=1 / 118)
    close = torch.tensor([0.0, 0.001, 0.5, 1.0], dtype=torch.float64)
    off = fs.grid_points(close, 0.25)[2]
    assert off == ["t[0] = 0 and t[1] = 0.001 fall on one Euler grid point (a gap shorter "
                   "than a step, dt = 0.25)"]


@pytest.mark.parametrize("closed", ["control=optimal", "control=optimal, elbo=mc",
                                    "control=affine, elbo=moments"])
def test_example_with_the_closed_form_fits_and_predicts(closed):
    """examples/fou.bdl with the closed form on its own data file, in the default float32:
    a few svi steps run with finite ELBOs and predict draws paths over all 60 times
    (before: 'every time must be an Euler grid point'). Under control=affine the control
    is float64 (the closed form computes in float64) with the float64 grid's 119 steps
    (118 and a sliver to t = 1), as moment_elbo's; the float32 times' grid has 118."""
    src = (ROOT / "examples" / "fou.bdl").read_text()
    src = src.replace("  )  # observations as control features",
                      f"    {closed},\n  )")
    assert closed in src
    fit = ppl.compile(src).fit(FOU, infer="svi", steps=3, samples=2, seed=0)
    assert len(fit.elbo) == 3 and all(math.isfinite(v) for v in fit.elbo)
    pred = fit.predict(FOU, num_samples=4, seed=0)
    assert pred["z"].shape == (4, 60, 1) and torch.isfinite(pred["z"]).all()
    if "affine" in closed:
        a = pyro.param("z_control$$$a")
        assert a.shape == (119, 1, 1, 6) and a.dtype == torch.float64
