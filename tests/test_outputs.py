"""Run-folder extras: plots (matplotlib) and ArviZ export, when those extras are there."""

from __future__ import annotations

import numpy as np
import pytest
from test_cli import LINREG

import ppl
from ppl.plots import write_plots


@pytest.fixture(scope="module")
def fits():
    rng = np.random.default_rng(0)
    x = rng.normal(size=30)
    data = {"x": x, "y": 1 + 2 * x + 0.5 * rng.normal(size=30), "x_new": np.linspace(-2, 2, 9)}
    m = ppl.compile(LINREG)
    nuts = m.fit(data, infer="nuts", samples=60, warmup=60, chains=2, seed=0)
    svi = m.fit(data, infer="svi", steps=100, lr=0.05, samples=50, seed=0)
    return nuts, svi


def test_plots(fits, tmp_path):
    pytest.importorskip("matplotlib")
    nuts, svi = fits
    covariates = {k: v for k, v in nuts.kwargs.items() if k != "y"}
    assert write_plots(nuts, tmp_path, covariates, ["y_new"]) == ["trace.png",
                                                                 "predictive_y_new.png"]
    # nothing predicted, no predictive plot
    assert write_plots(nuts, tmp_path, covariates, []) == ["trace.png"]
    assert write_plots(svi, tmp_path, svi.kwargs)[0] == "elbo.png"
    for name in ("trace.png", "predictive_y_new.png", "elbo.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_arviz_export_round_trip(fits, tmp_path):
    pytest.importorskip("arviz_base")
    xr = pytest.importorskip("xarray")
    nuts, _ = fits
    dt = nuts.to_inference_data()
    post = dt["posterior"]
    assert post["beta"].shape == (2, 60)
    assert post["y_new"].shape == (2, 60, 9)
    np.testing.assert_allclose(post["beta"].values, nuts.chains["beta"].numpy())
    np.testing.assert_allclose(dt["observed_data"]["y"].values, nuts.kwargs["y"].numpy())
    pytest.importorskip("h5netcdf")
    dt.to_netcdf(tmp_path / "posterior.nc")
    back = xr.open_datatree(tmp_path / "posterior.nc")
    np.testing.assert_allclose(back["posterior"]["alpha"].values, nuts.chains["alpha"].numpy())
