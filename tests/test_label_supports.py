"""Data whose support follows a label summed out: checked over the labels' values.

``k ~ Categorical(w); y ~ Uniform(0, b[k])`` with ``b = [0.5, 2.0]`` and ``y = 0.7``
has density ``w[1] / 2 > 0`` (k = 1 holds y): the data check took the support at one
value of k (a prior draw's, or every value at once under enumeration) and refused it.
A datum is outside only where no value of the labels holds it; in the fit, a value of
the labels that leaves it outside has density 0 there.
"""

import math

import pytest

import ppl
from ppl.syntax.diagnostics import BdlError

ALONE = """model K(b: real[2], y: real) {
  k ~ Categorical([0.3, 0.7])
  y ~ Uniform(0, b[k])
}"""

BESIDE = """model K(b: real[2], y: real) {
  a ~ Normal(0, 1)
  k ~ Categorical([0.3, 0.7])
  y ~ Uniform(0, b[k])
}"""

IN_PLATE = """model K(b: real[2], y: real[N]) {
  a ~ Normal(0, 1)
  plate n in N {
    k ~ Categorical([0.3, 0.7])
    y ~ Uniform(0, b[k])
  }
}"""

PARETO = IN_PLATE.replace("K(b", "P(s").replace("Categorical([0.3, 0.7])", "Bernoulli(0.4)") \
    .replace("Uniform(0, b[k])", "Pareto(s[k], 3)")

METHODS = ["nuts(samples=20, warmup=10, chains=1, seed={})",
           "svi(steps=5, seed={}, samples=20)", "map(steps=5, seed={})"]


@pytest.mark.parametrize("src", [ALONE, BESIDE])
@pytest.mark.parametrize("infer", METHODS)
def test_a_datum_held_by_one_label_is_fitted(src, infer):
    # p(k = 1 | y = 0.7) = 0.7 * 1/2 / (0.3 * 0 + 0.7 * 1/2) = 1 exactly: every draw.
    # Seeds 0-2: a prior draw of k = 0 refused y at the start (nuts, and with k alone
    # every method: Pyro's check of y against both of k's values at once)
    m = ppl.compile(src)
    for seed in range(3):
        fit = m.fit({"b": [0.5, 2.0], "y": 0.7}, infer=infer.format(seed))
        k = fit.samples["k"].reshape(-1)
        assert k.numel() >= 1 and bool((k == 1).all())


@pytest.mark.parametrize("infer", METHODS[:2])
def test_labels_in_a_plate_follow_their_exact_posterior(infer):
    # per element: p(k = 1 | y) = 1 at y = 0.7 (above b[0]) and 0.35 / (0.6 + 0.35) =
    # 7 / 19 at y = 0.2 (held by both: densities 1 / 0.5 and 1 / 2); a is read by
    # nothing, so the elements' labels are independent draws
    fit = ppl.compile(IN_PLATE).fit({"b": [0.5, 2.0], "y": [0.7] + [0.2] * 5},
                                    infer=infer.format(0).replace("20,", "60,"))
    k = fit.samples["k"].reshape(-1, 6).double()
    assert bool((k[:, 0] == 1).all())
    p = 7 / 19
    both = k[:, 1:].reshape(-1)
    assert abs(float(both.mean()) - p) < 4 * math.sqrt(p * (1 - p) / both.numel())


def test_a_support_torch_leaves_finite_outside_is_density_0_at_that_label():
    # Pareto's unvalidated log density is finite below its scale (NUTS runs unvalidated):
    # y = 0.7 under s = [1.0, 0.5] is held by k = 1 only, so p(k = 1 | y = 0.7) = 1; y =
    # 1.5 by both: 0.4 * 3 * 0.5^3 / 1.5^4 against 0.6 * 3 / 1.5^4, p = 0.05 / 0.65
    fit = ppl.compile(PARETO).fit({"s": [1.0, 0.5], "y": [0.7] + [1.5] * 5},
                                  infer="nuts(samples=60, warmup=20, chains=1, seed=0)")
    k = fit.samples["k"].reshape(-1, 6).double()
    assert bool((k[:, 0] == 1).all())
    p = 0.4 * 0.125 / (0.4 * 0.125 + 0.6)
    assert p == pytest.approx(1 / 13)
    assert abs(float(k[:, 1:].mean()) - p) < 4 * math.sqrt(p * (1 - p) / k[:, 1:].numel())


@pytest.mark.parametrize("src, line", [(ALONE, 3), (BESIDE, 4)])
@pytest.mark.parametrize("infer", METHODS)
def test_a_datum_no_label_holds_is_the_located_error(src, line, infer):
    m = ppl.compile(src, "k.bdl")
    for seed in range(2):  # at either label's draw: [0, 0.5] or [0, 2]
        with pytest.raises(BdlError) as e:
            m.fit({"b": [0.5, 2.0], "y": 2.5}, infer=infer.format(seed))
        text = e.value.render()
        assert text.startswith(f"k.bdl:{line}:3: error: 'y' is 2.5; Uniform is over numbers "
                               "in [0, ")
        assert "note: its support follows the label 'k' (summed out), and no value of it " \
            "holds these data" in text


def test_the_error_names_the_element_no_label_holds():
    # element 0 (0.7) is held by k = 1 only: a draw of k = 0 named it. Element 1 is the one
    m = ppl.compile(IN_PLATE, "k.bdl")
    for seed in range(3):
        with pytest.raises(BdlError) as e:
            m.fit({"b": [0.5, 2.0], "y": [0.7, 2.5, 0.3]},
                  infer=f"nuts(samples=5, warmup=5, chains=1, seed={seed})")
        assert e.value.render().startswith("k.bdl:5:5: error: 'y' element 1 is 2.5; Uniform "
                                           "is over numbers in [0, ")
