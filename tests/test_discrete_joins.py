"""Values of a label summed out (ppl.infer.discrete) joined with other values: lists,
cat, matrix products, diag, an index picked by a label drawn in a plate, a Bernoulli
label read through a name. Each is checked against the log density with the labels
summed out by hand (a logsumexp over the label's values)."""

from __future__ import annotations

import math

import pytest
import torch
from test_discrete import _summed_out

import ppl

NORMAL = torch.distributions.Normal
MU = torch.tensor([[0.0, 0.0, 0.0], [1.0, -0.5, 1.0], [-1.0, 0.5, -1.0]])
NU = torch.tensor([0.7, -0.3])
A = torch.tensor([[1.0, 0.5, -1.0], [0.2, 0.3, 0.4]])
B = torch.tensor([[1.0, 0.0], [0.5, -1.0], [0.2, 0.3]])
MM = torch.arange(18.0).reshape(3, 2, 3) / 10 - 0.8  # a matrix per label value


def _mixture(means: list, y) -> float:
    """log sum_k 1/K prod N(y; means[k], 1): the label summed out, uniform prior."""
    lik = torch.stack([NORMAL(m, 1.0).log_prob(y).sum() for m in means])
    return float(torch.logsumexp(lik + math.log(1 / len(means)), 0))


def _model(args: str, value: str, label: str = "z ~ Categorical(ones(3) / 3)") -> ppl.Model:
    return ppl.compile(f"model T(y: real{args}) {{\n  {label}\n  y ~ Normal({value}, 1)\n}}")


Y2 = torch.tensor([0.5, 1.2])
Y22 = torch.tensor([[0.5, 1.2], [0.1, -0.4]])
Y5 = torch.tensor([0.5, 1.2, -0.3, 0.1, 0.9])


@pytest.mark.parametrize("args, value, data, means, nesting", [
    # a scalar item with a vector one: widened on its right, so it meets the vector's
    # own dim and not the label's (it was a shape error in Pyro's enumeration)
    ("[2, 2], mu: real[3, 2]", "[mu[z], z * 1.0]", {"mu": MU[:, :2]},
     [torch.stack([MU[k, :2], torch.full((2,), k * 1.0)]) for k in range(3)], 2),
    ("[2], mu: real[3]", "[mu[z], z * 1.0]", {"mu": MU[:, 1]},
     [torch.tensor([MU[k, 1], k * 1.0]) for k in range(3)], 1),
    # cat of a label's values with a plain vector: the vector meets the label's dims
    # ('Tensors must have same number of dimensions')
    ("[5], mu: real[3, 3], nu: real[2]", "cat([mu[z], nu])", {"mu": MU, "nu": NU},
     [torch.cat([MU[k], NU]) for k in range(3)], 1),
    ("[5], mu: real[3, 3], nu: real[2]", "cat([nu, 2 * mu[z]])", {"mu": MU, "nu": NU},
     [torch.cat([NU, 2 * MU[k]]) for k in range(3)], 1),
    # a matrix times a label's vector, and a label's vector times a matrix (matmul read
    # [K, 1, D] as K one-row matrices: a shape error)
    ("[2], mu: real[3, 3], A: real[2, 3]", "A @ mu[z]", {"mu": MU, "A": A},
     [A @ MU[k] for k in range(3)], 1),
    ("[2], mu: real[3, 3], B: real[3, 2]", "mu[z] @ B", {"mu": MU, "B": B},
     [MU[k] @ B for k in range(3)], 1),
    ("[2], M: real[3, 2, 3], v: real[3]", "M[z] @ v", {"M": MM, "v": MU[1]},
     [MM[k] @ MU[1] for k in range(3)], 1),
    # diag of a label's vector: a [D, D] matrix per label value (its shape was unknown,
    # so it was not moved onto the site's plates: 'Invalid tensor shape')
    ("[3, 3], mu: real[3, 3]", "diag(mu[z])", {"mu": MU},
     [torch.diag(MU[k]) for k in range(3)], 2),
])
def test_a_label_value_joined_with_others_has_the_exact_summed_out_density(
        args, value, data, means, nesting):
    y = {1: Y2, 2: Y22}[nesting] if "[5]" not in args else Y5
    if args.startswith("[3, 3]"):
        y = torch.arange(9.0).reshape(3, 3) / 5
    m = _model(args, value)
    got = _summed_out(m, {"y": y, **data}, {}, nesting)
    want = _mixture(means, y)
    assert abs(got - want) < 1e-5, (got, want)


def test_a_label_matrix_product_in_a_plate_meets_its_elements():
    """A @ mu[z] read in plate i (y: real[N, 2]): each row of y sits at A @ mu[k]."""
    m = ppl.compile("model T(y: real[N, 2], mu: real[3, 3], A: real[2, 3]) {\n"
                    "  z ~ Categorical(ones(3) / 3)\n"
                    "  plate i in N { y ~ Normal(A @ mu[z], 1) }\n}")
    got = _summed_out(m, {"y": Y22, "mu": MU, "A": A}, {}, 1)
    want = _mixture([(A @ MU[k]).expand(2, 2) for k in range(3)], Y22)
    assert abs(got - want) < 1e-5, (got, want)


X43 = torch.tensor([[0.1, 0.2, 0.3], [1.0, 0.0, -1.0], [0.5, 0.5, 0.5], [2.0, 1.0, 0.0]])
Y4 = torch.tensor([0.5, -0.6, 0.9, 0.2])


@pytest.mark.parametrize("value, mean", [
    ("x[i][c]", lambda: X43.T),
    ("x[i][c] + 2 * x[i][0]", lambda: X43.T + 2 * X43[:, 0])])
def test_a_row_indexed_by_a_label_drawn_in_the_plate(value, mean):
    """x[i][c], c drawn in plate i: element i's row picks its own c (the index meets the
    row's plate dim; the checker had it [N, N], a located error). Exact: sum_i logsumexp_k
    (log 1/3 + log N(y_i; x[i, k], 1)); log_density at c = [1, 2, 0, 1] picks x[i, c_i]."""
    m = ppl.compile("model T(y: real[N], x: real[N, 3]) {\n  plate i in N {\n"
                    f"    c ~ Categorical(ones(3) / 3)\n    y ~ Normal({value}, 1)\n  }}\n}}")
    data = {"y": Y4, "x": X43}
    lik = NORMAL(mean(), 1.0).log_prob(Y4) + math.log(1 / 3)
    got = _summed_out(m, data, {}, 1)
    assert abs(got - float(torch.logsumexp(lik, 0).sum())) < 1e-5, got
    c = [1, 2, 0, 1]
    assert abs(m.log_density({"c": c}, data) - float(lik[c, range(4)].sum())) < 1e-5


@pytest.mark.parametrize("plate", [False, True])
def test_a_bernoulli_label_indexes_through_a_name(plate):
    """u = z, then nu[u], z ~ Bernoulli(0.4): u is z's 0.0 / 1.0 too, made an integer
    where it indexes ('tensors used as indices must be long'). Exact: logsumexp_z (log
    p(z) + log N(y; nu[z], 1)), per point."""
    body = "z ~ Bernoulli(0.4)\n  u = 1 - z\n  y ~ Normal(nu[u], 1)"
    if plate:
        body = ("plate i in N {\n    z ~ Bernoulli(0.4)\n    u = 1 - z\n"
                "    y ~ Normal(nu[u], 1)\n  }")
    m = ppl.compile(f"model T(y: real{'[N]' if plate else ''}, nu: real[2]) {{\n  {body}\n}}")
    y = torch.tensor([0.3, -0.8] if plate else [0.3])
    prior = torch.tensor([math.log(0.6), math.log(0.4)])[:, None]
    want = float(torch.logsumexp(prior + NORMAL(NU.flip(0)[:, None], 1.0).log_prob(y), 0).sum())
    data = {"y": y if plate else float(y[0]), "nu": NU}
    assert abs(_summed_out(m, data, {}, int(plate)) - want) < 1e-6
