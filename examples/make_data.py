"""Write the data files of the examples (``NAME.data.json``) from a fixed seed.

Run from anywhere: ``python examples/make_data.py``. The data are simulated from known
parameters (given below each generator), so a fit can be checked against the truth.
eight_schools.data.json holds the classic published numbers and is not generated here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _round(a, nd=3):
    return np.round(np.asarray(a, dtype=float), nd).tolist()


def linear_regression(rng):
    # y = 1 + 2 x0 - 1 x1 + 0.5 x2 + N(0, 0.7)
    n, m, k = 50, 5, 3
    x = rng.normal(size=(n, k))
    x_new = rng.normal(size=(m, k))
    beta = np.array([2.0, -1.0, 0.5])
    y = 1.0 + x @ beta + rng.normal(0, 0.7, size=n)
    return {"N": n, "K": k, "x": _round(x), "y": _round(y), "x_new": _round(x_new)}


def logistic_regression(rng):
    # logit P(y) = -0.5 + 1.5 x0 - 2 x1
    n, k = 100, 2
    x = rng.normal(size=(n, k))
    logits = -0.5 + x @ np.array([1.5, -2.0])
    y = rng.random(n) < 1 / (1 + np.exp(-logits))
    return {"x": _round(x), "y": [bool(v) for v in y]}


def varying_intercepts(rng):
    # a_j = 1.5 + 0.7 u_j + N(0, 0.3); y_i = a_county[i] - 0.6 floor_i + N(0, 0.5)
    j, n = 12, 120
    log_uranium = rng.normal(0, 0.5, size=j)
    a = 1.5 + 0.7 * log_uranium + rng.normal(0, 0.3, size=j)
    county = rng.integers(0, j, size=n)
    county[:j] = np.arange(j)  # every county has at least one house
    floor = (rng.random(n) < 0.2).astype(float)
    y = a[county] - 0.6 * floor + rng.normal(0, 0.5, size=n)
    return {"county": county.tolist(), "floor": floor.tolist(),
            "log_uranium": _round(log_uranium), "y": _round(y)}


def gp_regression(rng):
    # y = sin(x) + N(0, 0.2), x on [0, 8]
    n = 20
    x = np.sort(rng.uniform(0, 8, size=n))
    y = np.sin(x) + rng.normal(0, 0.2, size=n)
    return {"x": _round(x), "y": _round(y)}


def mixture(rng):
    # 0.4 N(-2, 0.8) + 0.6 N(2, 0.6)
    n = 100
    z = rng.random(n) < 0.4
    y = np.where(z, rng.normal(-2, 0.8, size=n), rng.normal(2, 0.6, size=n))
    return {"y": _round(y)}


def mlp_regression(rng):
    # y = sin(3 x) + 0.3 x + N(0, 0.1) on [-2, 2]
    n, m = 80, 9
    x = rng.uniform(-2, 2, size=n)
    y = np.sin(3 * x) + 0.3 * x + rng.normal(0, 0.1, size=n)
    x_new = np.linspace(-2, 2, m)
    return {"x": _round(x[:, None]), "y": _round(y), "x_new": _round(x_new[:, None])}


def minibatch_logistic(rng):
    # logit P(y) = 0.3 + x @ [1, -1, 2]
    n, k = 1000, 3
    x = rng.normal(size=(n, k))
    logits = 0.3 + x @ np.array([1.0, -1.0, 2.0])
    y = (rng.random(n) < 1 / (1 + np.exp(-logits))).astype(int)
    return {"x": _round(x, 2), "y": y.tolist()}


GENERATORS = [linear_regression, logistic_regression, varying_intercepts, gp_regression,
              mixture, mlp_regression, minibatch_logistic]


def main() -> None:
    for i, gen in enumerate(GENERATORS):
        rng = np.random.default_rng(20240 + i)
        path = HERE / f"{gen.__name__}.data.json"
        path.write_text(json.dumps(gen(rng), separators=(", ", ": ")) + "\n")
        print(f"wrote {path.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
