"""Checks made when a fit starts or ends (audit stop 22): observed data outside their
distribution's support are a located error under every method, option values out of
range are errors however given, a diverging SVI is a user error, an optimiser that did
not converge is warned about, and a delta guide's summary is a point estimate's."""

from __future__ import annotations

import contextlib
import io

import pytest
import torch

import ppl
from ppl.infer.methods import SEED_MAX, Option, lookup
from ppl.infer.report import optimiser_warnings

EXPO = "model H(y: real[N]) {\n  s ~ HalfNormal(1)\n  y ~ Exponential(s)\n}\n"
MULTI = ("model DM(c: int[K], n: int) {\n  th ~ Dirichlet(ones(K) * 2)\n"
         "  c ~ Multinomial(n, th)\n}\n")
BINOM = "model B(k: int[N], n: int) {\n  p ~ Beta(1, 1)\n  k ~ Binomial(n, p)\n}\n"
POIS = "model P(y: int[N]) {\n  lam ~ Gamma(3, 2)\n  y ~ Poisson(lam)\n}\n"
POIS_BATCH = ("model P(y: int[N]) {\n  lam ~ Gamma(3, 2)\n  plate N batch 2 {\n"
              "    y ~ Poisson(lam)\n  }\n}\n")

# tiny runs: the support check comes before any draw or step
SHORT = {"nuts": dict(samples=5, warmup=5, chains=1), "hmc": dict(samples=5, warmup=5, chains=1),
         "sghmc": dict(samples=2, warmup=2, thin=1, chains=1), "svi": dict(steps=5),
         "map": dict(steps=5)}


def _support_error(src: str, data: dict, method: str) -> list[str]:
    m = ppl.compile(src, filename="m.bdl")
    with pytest.raises(ppl.BdlError) as e:
        m.fit(data, infer=method, **SHORT[method])
    return str(e.value).splitlines()


@pytest.mark.parametrize("method", ["nuts", "hmc", "sghmc", "svi", "map"])
def test_negative_value_under_exponential_is_located_under_every_method(method):
    # before: nuts, hmc and sghmc fitted it (Pyro's samplers run with validation off)
    lines = _support_error(EXPO, {"y": [1.5, -2.5, 0.5]}, method)
    assert lines[0] == ("m.bdl:3:3: error: 'y' element 1 is -2.5; Exponential is over "
                        "numbers >= 0")
    assert lines[1] == "    y ~ Exponential(s)"
    assert len(lines) == 3  # the caret; no note


@pytest.mark.parametrize("method", ["svi", "nuts"])
def test_a_transformed_family_is_named_not_its_base(method):
    # Pareto is Pyro's Exponential transformed: the message named "Exponential"
    src = "model P(y: real[N]) {\n  a ~ Gamma(2, 1)\n  y ~ Pareto(1, a)\n}\n"
    lines = _support_error(src, {"y": [1.5, 0.5, 2.0]}, method)
    assert lines[0] == "m.bdl:3:3: error: 'y' element 1 is 0.5; Pareto is over numbers >= 1"


@pytest.mark.parametrize("method", ["nuts", "sghmc"])
def test_multinomial_counts_not_summing_to_n_are_located(method):
    # before: nuts fitted the counts (sum 16) as if n were 16
    lines = _support_error(MULTI, {"c": [5, 1, 10], "n": 15}, method)
    assert lines[0] == ("m.bdl:3:3: error: 'c' is [5, 1, 10]; Multinomial is over vectors "
                        "of counts >= 0 that sum to at most 15")


@pytest.mark.parametrize("method", ["nuts", "hmc"])
@pytest.mark.parametrize("src, data, shown", [
    (BINOM, {"k": [3, 7], "n": 5}, "'k' element 1 is 7; Binomial is over integers from 0 to 5"),
    (POIS, {"y": [1, -2, 3]}, "'y' element 1 is -2; Poisson is over integers >= 0"),
])
def test_counts_outside_support_are_located_not_a_failed_initialisation(method, src, data,
                                                                        shown):
    # before: "cannot find valid initial params", with no line
    lines = _support_error(src, data, method)
    assert lines[0] == f"m.bdl:3:3: error: {shown}"
    assert "cannot find valid initial params" not in "\n".join(lines)


@pytest.mark.parametrize("method", ["svi", "nuts", "sghmc"])
def test_a_bad_row_outside_the_first_minibatch_is_found(method):
    # the plate's minibatch holds 2 of 10 rows: the check runs over all of them
    lines = _support_error(POIS_BATCH, {"y": [1, 2, 3, 1, 0, 2, 1, 3, 2, -1]}, method)
    assert lines[0] == "m.bdl:4:5: error: 'y' element 9 is -1; Poisson is over integers >= 0"


@pytest.mark.parametrize("method", ["svi", "sghmc"])
def test_support_check_leaves_a_valid_fit_unchanged(method, monkeypatch):
    # the subsampled model is traced once more over all rows: its random streams restored
    import torch

    from ppl.infer import run

    m = ppl.compile(POIS_BATCH, filename="m.bdl")
    data = {"y": [1, 2, 3, 1, 0, 2, 1, 3, 2, 1]}
    opts = dict(steps=10, samples=3) if method == "svi" else dict(SHORT["sghmc"], warmup=5)
    checked = m.fit(data, infer=method, **opts)
    monkeypatch.setattr(run, "check_supports", lambda *a: set())  # checks nothing
    unchecked = m.fit(data, infer=method, **opts)
    assert torch.equal(checked.samples["lam"], unchecked.samples["lam"])


UNIFORM = "model U(y: real[N]) {\n  th ~ Uniform(0, 20)\n  y ~ Uniform(0, th)\n}\n"
LOWER = "model L(y: real[N]) {\n  lo ~ Uniform(-10, 0)\n  y ~ Uniform(lo, 10)\n}\n"


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("src, data, low, high", [
    (UNIFORM, {"y": [3.0, 5.0, 8.0]}, 8.0, 20.0),  # th >= max y
    (LOWER, {"y": [-3.0, -1.0, 2.0]}, -10.0, -3.0),  # lo <= min y
])
def test_valid_data_under_a_support_set_by_a_latent_fits(src, data, low, high, seed):
    # before: refused at a prior draw of the latent (th = 7.76 at seed 1: "'y' element 2
    # is 8; Uniform is over numbers in [0, 7.76407]"); its support is not checked
    m = ppl.compile(src, filename="m.bdl")
    f = m.fit(data, infer="nuts", samples=10, warmup=10, chains=1, seed=seed)
    (name,) = f.samples
    draws = f.samples[name]
    assert draws.shape == (10,)
    assert bool(((draws >= low) & (draws <= high)).all())


def test_nuts_rejects_proposals_outside_a_support_set_by_a_latent():
    # y ~ Pareto(s, 3) needs s <= min(y) = 1.2; before, torch's unvalidated log_prob was
    # finite past it and the draws of s sat near 4.8 (mean 4.54). Exact posterior:
    # p(s | y) ~ s^9 on [0, 1.2], mean 1.2 * 10/11, sd 1.2 * sqrt(10/12 - (10/11)^2)
    import math

    from pyro.ops.stats import effective_sample_size

    src = "model P(y: real[N]) {\n  s ~ Uniform(0, 5)\n  y ~ Pareto(s, 3)\n}\n"
    m = ppl.compile(src, filename="m.bdl")
    # one chain: the bound is 4 s.e. at the run's own ESS (the old bias was 34 sd)
    f = m.fit({"y": [1.2, 2.0, 4.0]}, infer="nuts", samples=300, warmup=150, chains=1,
              seed=0)
    draws = f.samples["s"]
    assert draws.shape == (300,)
    assert float(draws.max()) <= 1.2
    ess = float(effective_sample_size(draws.reshape(1, 300)))
    se = 1.2 * math.sqrt(10 / 12 - (10 / 11) ** 2) / math.sqrt(ess)
    assert ess > 20
    assert abs(float(draws.mean()) - 1.2 * 10 / 11) < 4 * se


def test_a_data_only_support_beside_a_latent_one_is_still_checked():
    # y's support follows th and is skipped; c's (integers >= 0) is the data's alone
    src = ("model UC(y: real[N], c: int[N]) {\n  th ~ Uniform(0, 20)\n"
           "  y ~ Uniform(0, th)\n  c ~ Poisson(th)\n}\n")
    lines = _support_error(src, {"y": [3.0, 5.0, 8.0], "c": [4, -1, 6]}, "nuts")
    assert lines[0] == "m.bdl:4:3: error: 'c' element 1 is -1; Poisson is over integers >= 0"


@pytest.mark.parametrize("method", ["nuts", "svi"])
def test_binomial_count_past_a_data_size_is_located(method):
    # n is N, the data's size, not a latent: k = 3 > 2 is the data's mistake
    src = "model BN(k: int[N]) {\n  p ~ Beta(1, 1)\n  k ~ Binomial(N, p)\n}\n"
    lines = _support_error(src, {"k": [1, 3]}, method)
    assert lines[0] == ("m.bdl:3:3: error: 'k' element 1 is 3; Binomial is over integers "
                        "from 0 to 2")


@pytest.mark.parametrize("as_number, checked", [(False, {"k", "c"}), (True, {"c"})])
def test_latent_free_sites_are_those_whose_support_holds_no_latent(as_number, checked):
    # Uniform(0, th) follows the latent th; Binomial(5, p) and Exponential do not. A model
    # that reads a latent as a number (numpy) cannot carry the grad marks: then only the
    # supports holding no tensor at all (Exponential's) are checked
    import numpy as np
    import pyro
    import pyro.distributions as dist
    import torch

    from ppl.infer.run import _latent_free_observed

    def model(y, k, c):
        th = pyro.sample("th", dist.Uniform(0.0, 20.0))
        p = pyro.sample("p", dist.Beta(1.0, 1.0))
        if as_number:
            np.asarray(th)
        pyro.sample("y", dist.Uniform(0.0, th), obs=y)
        pyro.sample("k", dist.Binomial(torch.tensor(5.0), p), obs=k)
        pyro.sample("c", dist.Exponential(th), obs=c)

    kw = dict(y=torch.tensor(3.0), k=torch.tensor(2.0), c=torch.tensor(1.0))
    trace = pyro.poutine.trace(model).get_trace(**kw)
    assert _latent_free_observed(model, kw, trace) == checked


def _cli(*args) -> tuple[int, str, str]:
    from ppl.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def test_cli_support_error_exits_1(tmp_path):
    (tmp_path / "h.bdl").write_text(EXPO + "infer nuts(samples=5, warmup=5, chains=1)\n")
    (tmp_path / "h.data.json").write_text('{"y": [1.5, -2.5, 0.5]}')
    code, _, err = _cli("run", tmp_path / "h.bdl", "--out", tmp_path / "run")
    assert code == 1
    assert (f"{tmp_path / 'h.bdl'}:3:3: error: 'y' element 1 is -2.5; Exponential is over "
            "numbers >= 0") in err
    assert "Traceback" not in err and "traceback is in" not in err  # a data error, not a bug


# ---- option ranges ----

@pytest.mark.parametrize("option, value, problem", [
    (Option(0.8, float, low=0.0, high=1.0, low_open=True, high_open=True), 1.5,
     "must be in (0, 1)"),
    (Option(0.8, float, low=0.0, high=1.0, low_open=True, high_open=True), 0.0,
     "must be in (0, 1)"),
    (Option(0.8, float, low=0.0, high=1.0, low_open=True, high_open=True), 1.0,
     "must be in (0, 1)"),
    (Option(0.8, float, low=0.0, high=1.0, low_open=True, high_open=True), 0.999, None),
    (Option(0.01, float, low=0.0, low_open=True), 0.0, "must be positive"),
    (Option(0.01, float, low=0.0, low_open=True), 1e-9, None),
    (Option(1, int, low=1), 0, "must be at least 1"),
    (Option(0, int, low=0), 0, None),
    (Option(1.0, float, low=0.0, high=1.0, low_open=True), 1.0, None),
    (Option(1.0, float, low=0.0, high=1.0, low_open=True), 1.5, "must be in (0, 1]"),
    (Option(0, int, low=0, high=SEED_MAX), SEED_MAX + 1, "must be in [0, 4294967295]"),
    (Option(0, int, high=10, high_open=True), 10, "must be less than 10"),
    (Option(0.5, float, low=0.5, low_open=True), 0.5, "must be greater than 0.5"),
    (Option(0.01, float, low=0.0, low_open=True), float("inf"),
     "must be a finite number, got inf"),
    (Option(True, bool), True, None),  # not a number: the checker judges its type
])
def test_option_problem(option, value, problem):
    assert option.problem(value) == problem


def test_every_seed_goes_with_any_number_of_chains():
    """Chain c's seed is derived from (seed, c) within numpy's range (chain_seed), so the
    largest seed takes any number of chains (with seed + c it took one)."""
    nuts = lookup("nuts")
    opts = {k: o.default for k, o in nuts.options.items()}
    assert nuts.problems({**opts, "seed": SEED_MAX, "chains": 4}) == []
    assert nuts.problems({**opts, "seed": SEED_MAX, "chains": 1}) == []


A = "model A(y: real[N]) { mu ~ Normal(0, 1); y ~ Normal(mu, 1) }\n"


@pytest.mark.parametrize("infer, options, message", [
    ("nuts(target_accept=1.5)", {}, "option 'target_accept' of nuts: must be in (0, 1)"),
    ("nuts", {"target_accept": 0}, "option 'target_accept' of nuts: must be in (0, 1)"),
    ("svi(lr=0)", {}, "option 'lr' of svi: must be positive, or 0 with lr_scalars > 0 "
                      "(then only the one-number parameters move)"),
    ("map", {"lr": 0.0}, "option 'lr' of map: must be positive, or 0 with lr_scalars > 0 "
                         "(then only the one-number parameters move)"),
    ("hmc(step_size=0)", {}, "option 'step_size' of hmc: must be positive"),
    ("svi(lr_decay=1.5)", {}, "option 'lr_decay' of svi: must be in (0, 1]"),
    ("sghmc(friction=0)", {}, "option 'friction' of sghmc: must be in (0, 1]"),
    ("sghmc", {"friction": 1.5}, "option 'friction' of sghmc: must be in (0, 1]"),
])
def test_out_of_range_options_given_at_run_time_are_errors(infer, options, message):
    # before: target_accept=1.5 hung, 0 gave a stuck chain, lr=0 fitted nothing
    m = ppl.compile(A, filename="a.bdl")
    with pytest.raises(ppl.BdlError) as e:
        m.resolve_infer(infer, **options)
    if options:  # a keyword: no place to show
        assert str(e.value) == f"infer: error: {message}"
    else:  # in the spec: located there, as on the file's infer line
        col = infer.index("(") + len("infer ") + 2
        assert str(e.value).splitlines()[:2] == [f"--infer:1:{col}: error: {message}",
                                                 f"  infer {infer}"]


def test_out_of_range_option_on_the_command_line_exits_1(tmp_path):
    (tmp_path / "a.bdl").write_text(A)
    (tmp_path / "a.data.json").write_text('{"y": [0.5]}')
    code, _, err = _cli("run", tmp_path / "a.bdl", "--infer", "nuts(target_accept=1.5)",
                        "--out", tmp_path / "run")
    assert (code, err.strip().splitlines()) == (1, [
        "--infer:1:12: error: option 'target_accept' of nuts: must be in (0, 1)",
        "  infer nuts(target_accept=1.5)", "             ^~~~~~~~~~~~~~~~~"])


def test_out_of_range_option_in_the_file_is_a_check_error():
    with pytest.raises(ppl.BdlError) as e:
        ppl.compile(A + "infer nuts(target_accept=1.5)\n", filename="a.bdl")
    assert str(e.value).splitlines()[0] == ("a.bdl:2:12: error: option 'target_accept' of "
                                            "nuts: must be in (0, 1)")


def test_largest_seed_runs_with_several_chains():
    """Written in the file with 2 chains it compiles (it was a check error at the seed),
    and the fit's two chains differ."""
    m = ppl.compile(A + "infer nuts(seed=4294967295, chains=2, samples=3, warmup=3)\n",
                    filename="a.bdl")
    f = m.fit({"y": [0.5]})
    assert f.chains["mu"].shape == (2, 3)
    assert not torch.equal(f.chains["mu"][0], f.chains["mu"][1])


def test_lr_zero_is_accepted_when_lr_scalars_moves_the_scalars():
    m = ppl.compile(A, filename="a.bdl")
    _, opts = m.resolve_infer("svi(lr=0, lr_scalars=0.1)")
    assert (opts["lr"], opts["lr_scalars"]) == (0.0, 0.1)


# ---- divergence and convergence of svi/map ----

def test_diverging_svi_is_a_user_error_naming_the_option():
    # before: a raw ValueError from the guide (exit 3 in the CLI)
    m = ppl.compile(POIS, filename="m.bdl")
    with pytest.raises(ppl.BdlError) as e:
        m.fit({"y": [1, 2, 3]}, infer="svi(lr=50, steps=100)")
    assert str(e.value) == ("infer: error: svi: the ELBO became NaN at step 3 of 100: the "
                            "optimisation diverged with lr=50\n"
                            "  note: lower lr (e.g. infer svi(lr=5))")


@pytest.mark.parametrize("infer, code, shown", [
    ("svi(lr=50, steps=100)", 1, "error: svi: the ELBO became NaN at step 3 of 100"),
    ("map(lr=50, steps=50)", 0, "warning: the fit did not converge: the ELBO fell from -5.819"),
])
def test_divergence_on_the_command_line(tmp_path, infer, code, shown):
    (tmp_path / "p.bdl").write_text(POIS)
    (tmp_path / "p.data.json").write_text('{"y": [1, 2, 3]}')
    status, _, err = _cli("run", tmp_path / "p.bdl", "--infer", infer, "--out", tmp_path / "run")
    assert status == code and shown in err
    assert "Traceback" not in err and "Encountered NaN" not in err


def test_map_that_ran_away_is_warned_about():
    # lr=50 sends lam to 5.7e21, where the ELBO is -2.9e22 and stays
    m = ppl.compile(POIS, filename="m.bdl")
    f = m.fit({"y": [1, 2, 3]}, infer="map(lr=50, steps=50)")
    assert f.summary()["lam"]["mean"] > 1e20
    assert optimiser_warnings(f) == [
        "the fit did not converge: the ELBO fell from -5.819 at the first step to -2.872e+22 "
        "(mean of the last 5 steps); the estimates are not a posterior mode: lower lr "
        "(now 50)"]
    # Gamma(3, 2) prior, counts 1, 2, 3: the posterior is Gamma(9, 5), its mode 8 / 5
    good = m.fit({"y": [1, 2, 3]}, infer="map(lr=0.05, steps=300)")
    assert good.summary()["lam"]["mean"] == pytest.approx(1.6, abs=1e-4)
    assert optimiser_warnings(good) == []


# ---- a delta guide is a point estimate ----

def test_svi_delta_guide_summary_shows_the_value_alone():
    # before: sd 0, nan R-hat and ESS for 1000 copies of one value
    m = ppl.compile(POIS, filename="m.bdl")
    f = m.fit({"y": [1, 2, 3]}, infer="svi(guide=delta, steps=300, lr=0.05, samples=10)")
    s = f.summary()
    assert s["lam"]["mean"] == pytest.approx(1.6, abs=1e-4)  # the mode of Gamma(9, 5)
    assert s["lam"]["sd"] == 0.0
    assert str(s) == "         value\nlam        1.6"
    normal = m.fit({"y": [1, 2, 3]}, infer="svi(steps=20, samples=10)").summary()
    assert str(normal).splitlines()[0].split() == ["mean", "sd", "5%", "50%", "95%",
                                                   "r_hat", "ess"]


def test_hmc_warns_that_it_does_not_reject_outside_a_support_set_by_a_latent():
    m = ppl.compile("model P(y: real[N]) {\n  s ~ Uniform(0, 5)\n  y ~ Pareto(s, 3)\n}\n", "p.bdl")
    with pytest.warns(UserWarning, match=r"^hmc does not reject proposals outside the support "
                      r"of 'y', which follows a latent: its draws may leave it \(use nuts\)$"):
        m.fit({"y": [1.2, 2.0, 4.0]}, infer="hmc(samples=5, warmup=5, chains=1)")


def test_svi_whose_guide_crosses_a_support_that_follows_a_latent_blames_the_guide():
    m = ppl.compile("model U(y: real[N]) {\n  th ~ Uniform(0, 20)\n  y ~ Uniform(0, th)\n}\n",
                    "u.bdl")
    with pytest.raises(ppl.BdlError) as e:
        m.fit({"y": [3.0, 5.0, 8.0]}, infer="svi(steps=200)", seed=0)
    first, note = e.value.render().splitlines()[:2]
    assert first.startswith("infer: error: svi: at step ")
    assert first.endswith("the guide drew latents that put the observed 'y' outside its "
                          "support, which follows them")
    assert note.startswith("  note: the data are not at fault")
