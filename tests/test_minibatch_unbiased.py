"""A minibatch's log density is an unbiased estimate of the full density: averaged over
ALL C(N, B) minibatches of `plate n in N batch B` (enumerated, each fixed by conditioning
the plate's subsample site, Pyro's N / B scale applied by the trace) it equals the full
density written out by hand, exactly. A value read whole in the plate (`x2[0]` of data,
`w1[0]` of a closed plate's value: docs "Plates", only the bare name is read per element)
is the same for every element, so each minibatch is exactly N times its term; read per
element (`x2[0, n]`, `xNK[n]`) the minibatches differ and only their average is the full
density. `m.log_density` runs the whole plate, so it cannot show a cut whole value.
"""

from __future__ import annotations

import itertools
import math

import pyro
import pytest
import torch

import ppl

N, K, M, B = 4, 3, 2, 2
X = [0.5, -1.0, 2.0, 0.3]
A = [[0.1, 0.2], [0.7, -0.4], [1.5, 0.0]]
XKN = [[0.25, -0.5, 1.0, 2.0], [1.5, 0.75, -2.0, 0.5], [0.0, 1.0, -1.0, 3.0]]  # real[K, N]
XNK = [list(r) for r in zip(*XKN, strict=True)]  # real[N, K]
HEAD = "model F(x: real[N], A: real[K, M], xKN: real[K, N], xNK: real[N, K]) {\n"
# w1 = x * A[k, 0] of plate k, which holds a plate m (so w1 is [K, 1, N] there, [K, N]
# after it: the layout lower._laid_out_axis cuts)
CLOSED_NESTED = "plate k in K {\n w1 = x * A[k, 0]\n plate m in M {\n w4 = k * A[k, m]\n }\n}\n"
CLOSED = "plate k in K {\n w1 = x * A[k, 0]\n}\n"
ROW0, W1_0, W1_2 = sum(XKN[0]), 0.1 * sum(X), 1.5 * sum(X)  # -> 2.75, 0.18, 2.7


def _t(v):
    return torch.tensor(v, dtype=torch.float64)


# running sums along N of x[n] * A[0:2, 0] and of xNK[n] + transpose(A), all entries
CUM_XA = float(torch.cumsum(torch.outer(_t(X), _t([0.1, 0.7])), 0).sum())  # 2.64
CUM_XNK_AT = float(torch.cumsum(_t(XNK)[:, None, :] + _t(A).T[None], 0).sum())  # 45.5
DATA = {"x": X, "A": A, "xKN": XKN, "xNK": XNK}


def _enumerate(src: str, data: dict, plates: dict, latents: dict | None = None):
    """The full density (m.log_density at the latents' full values) and the traced log
    density of every minibatch of every batch plate (``plates``: name -> (size, batch)),
    keyed by the plates' subsets; each latent drawn in a batch plate is conditioned on
    its minibatch's rows (``latents``: name -> (full value, subsets -> those rows))."""
    m = ppl.compile(src)
    kwargs = m.bind(data)
    out = {}
    for subsets in itertools.product(*(itertools.combinations(range(size), b)
                                       for size, b in plates.values())):
        cond = {p: torch.tensor(sub) for p, sub in zip(plates, subsets, strict=True)}
        cond |= {k: cut(dict(zip(plates, subsets, strict=True)))
                 for k, (_, cut) in (latents or {}).items()}
        model = pyro.poutine.condition(m.pyro_model, cond)
        out[subsets] = float(pyro.poutine.trace(model).get_trace(**kwargs).log_prob_sum())
    full = m.log_density({k: _t(v) for k, (v, _) in (latents or {}).items()}, data)
    return float(full), out


def _minibatch_densities(src: str) -> tuple[float, dict]:
    """The full density (m.log_density) and each minibatch's traced log density."""
    full, out = _enumerate(HEAD + src + "}\n", DATA, {"n": (N, B)})
    return full, {k[0]: v for k, v in out.items()}


# (body, the full density by hand, whether the term is the same for every element)
WHOLE = {
    # row 0 of data whose plate-sized dim N is its second, in plates m and n: per
    # element sum(row 0); M * N of them (it was cut to the minibatch's 2 entries of the
    # row: on average B / N of the density, 0.5 * 22.0)
    "data-row-nested": ("plate m in M {\n plate n in N batch 2 {\n factor(xKN[0])\n }\n}\n",
                        M * N * ROW0),
    "data-row-single": ("plate n in N batch 2 {\n factor(xKN[0])\n }\n", N * ROW0),
    "data-row-plate-first-nested": (
        "plate m in M {\n plate n in N batch 2 {\n factor(xNK[0])\n }\n}\n",
        M * N * sum(XNK[0])),
    "data-row-slice-nested": (
        "plate m in M {\n plate n in N batch 2 {\n factor(xKN[0, 1:3])\n }\n}\n",
        M * N * (XKN[0][1] + XKN[0][2])),
    # column k of data whose leading size is the batch plate's, under plates n and k: the
    # explicit ':' reads the whole dim, N numbers for every element (it read the
    # minibatch's 2; a site with N numbers of its own stopped with torch's size error)
    "data-column-outer-batch": (
        "plate n in N batch 2 {\n plate k in K {\n factor(xNK[:, k])\n }\n}\n",
        N * sum(map(sum, XNK))),
    # sum(xNK, dim=0) in the body of batch plate n, xNK laid out [N, 1, K] there: over
    # its N as declared (the whole data's column sums, the same for every element; it
    # was 'laid out at the plates' dims, so sum ... would not read it as declared')
    "data-column-sums-outer-batch": (
        "plate n in N batch 2 {\n factor(sum(xNK, dim=0)[0])\n plate m in M {\n"
        " factor(A[0, m])\n }\n}\n", N * (sum(r[0] for r in XNK) + 0.1 + 0.2)),
    # a slice reads the whole value's entries (docs "Plates"): a function of it is not cut
    # again by the plate (cumsum(x[0:3]) was cut by n: torch's 'index out of range';
    # softmax(xNK[0:2, k]) by n laid out [2, 1]: 'Index is supposed to be a vector')
    "data-slice-cumsum": ("plate n in N batch 2 {\n factor(cumsum(x[0:3]))\n}\n",
                          N * (0.5 - 0.5 + 1.5)),
    "data-column-slice-softmax-outer-batch": (
        "plate n in N batch 2 {\n plate k in K {\n factor(softmax(xNK[0:2, k]) * A[k, 0])\n"
        " }\n}\n", N * sum(r[0] for r in A)),
    # helper LF's: w1[0] is row 0 of a closed plate's value, 0.18 for every element,
    # 2 * 4 * 0.18 = 1.44 (the minibatches {0, 1} and {1, 3} were -0.4 and -0.56)
    "closed-row-nested": (CLOSED_NESTED + "plate m in M {\n plate n in N batch 2 {\n"
                          " factor(w1[0])\n }\n}\n", M * N * W1_0),
    "closed-row-single": (CLOSED + "plate n in N batch 2 {\n factor(w1[0])\n}\n", N * W1_0),
    "closed-row-outer-batch": (CLOSED + "plate n in N batch 2 {\n plate m in M {\n"
                               " factor(w1[0])\n }\n}\n", M * N * W1_0),
}
PER_ELEMENT = {
    "data-entry-nested": ("plate m in M {\n plate n in N batch 2 {\n factor(xKN[0, n])\n }\n}\n",
                          M * ROW0),
    "data-entry-of-row": ("plate m in M {\n plate n in N batch 2 {\n factor(xKN[0][n])\n }\n}\n",
                          M * ROW0),
    "data-own-row": ("plate m in M {\n plate n in N batch 2 {\n factor(xNK[n])\n }\n}\n",
                     M * sum(map(sum, XNK))),
    "data-bare": ("plate n in N batch 2 {\n factor(x)\n}\n", sum(X)),
    # dim=0 of an expression of the data, each element's own value (docs "Plates"):
    # logsumexp(xNK[n] - A[:, 0]); read as the declared dim 0, the plate's, xNK was read
    # uncut, N rows in a minibatch of 2 (torch's size error meeting x[n]; the plate
    # oracle's seed 1714)
    "data-own-dim-reduced": (
        "plate n in N batch 2 {\n factor(logsumexp(xNK - A[:, 0], dim=0) + x)\n}\n",
        sum(float(torch.logsumexp(torch.tensor(r, dtype=torch.float64) - torch.tensor(
            A, dtype=torch.float64)[:, 0], 0)) for r in XNK)
        + sum(X)),
    # x read per element and widened to [N, 1] against A[0:2, 0]'s 2 entries: dim=0 is
    # the entries' dim, none of x's, so x stays cut (the plate oracle's seed 2772)
    "widened-own-dim-reduced": (
        "plate n in N batch 2 {\n factor(logsumexp(A[0:2, 0] / (1.5 + tanh(x)), dim=0))\n}\n",
        sum(float(torch.logsumexp(torch.tensor([0.1, 0.7], dtype=torch.float64)
                                  / (1.5 + torch.tanh(torch.tensor(v, dtype=torch.float64))),
                                  0)) for v in X)),
    # a function along the plate dim of a value with a per-element number widened in it
    # (x, [N] -> [N, 1] against A[0:2, 0]'s 2 entries) is the whole value's, then cut:
    # the cut is at the widened value's plate dim -2, not x's own -1 (torch's 'Shape
    # mismatch inside plate('n') ... 2 vs 4'), also with own dims (xNK, [N, 1, K])
    "widened-cumsum-along-plate": (
        "plate n in N batch 2 {\n factor(cumsum(x * A[0:2, 0], dim=-2))\n}\n",
        CUM_XA),
    "widened-cumsum-along-plate-nested": (
        "plate m in M {\n plate n in N batch 2 {\n factor(cumsum(x * A[0:2, 0], dim=-2))"
        "\n }\n}\n",
        M * CUM_XA),
    "widened-softmax-along-plate": (
        "plate n in N batch 2 {\n factor(softmax(x * A[0:2, 0], dim=-2))\n}\n", 2.0),
    "widened-own-dims-cumsum-along-plate": (
        "plate n in N batch 2 {\n factor(cumsum(xNK + transpose(A), dim=-3))\n}\n",
        CUM_XNK_AT),
    # x[:] is the whole x for every element, so its running sums are too (they were cut
    # by n: each element's own cumsum(x)[n], 4.84 on average against 5.94)
    "data-whole-cumsum-times-element": (
        "plate n in N batch 2 {\n factor(cumsum(x[:]) * x)\n}\n",
        sum(X) * float(torch.cumsum(_t(X), 0).sum())),
    "data-column-softmax-outer-batch": (
        "plate n in N batch 2 {\n plate k in K {\n factor(softmax(xNK[:, k]) * xNK[n, k])\n"
        " }\n}\n", sum(map(sum, XNK))),
    # w1[2, n] read w1 cut in its layout and indexed again (torch's IndexError)
    "closed-entry-nested": (CLOSED_NESTED + "plate m in M {\n plate n in N batch 2 {\n"
                            " factor(w1[2, n])\n }\n}\n", M * W1_2),
    "closed-entry-single": (CLOSED + "plate n in N batch 2 {\n factor(w1[0, n])\n}\n", W1_0),
}


@pytest.mark.parametrize("name", list(WHOLE) + list(PER_ELEMENT))
def test_the_average_over_every_minibatch_is_the_full_density(name, float64):
    src, want = WHOLE.get(name) or PER_ELEMENT[name]
    full, each = _minibatch_densities(src)
    assert len(each) == 6  # C(4, 2)
    assert full == pytest.approx(want, abs=1e-12)
    assert sum(each.values()) / len(each) == pytest.approx(want, abs=1e-12)
    if name in WHOLE:  # the same term for every element: each minibatch is exact
        assert all(v == pytest.approx(want, abs=1e-12) for v in each.values()), each
    else:  # a real estimate: the minibatches differ
        assert max(each.values()) - min(each.values()) > 0.1, each


def test_lf_minibatches_of_a_closed_plate_row(float64):
    """The two traced runs helper LF saw (-0.4 for {0, 1}: 2 * 2 * 2 * 0.1 * (0.5 - 1),
    -0.56 for {1, 3}) are now 1.44, the full density, as every minibatch is."""
    _, each = _minibatch_densities(WHOLE["closed-row-nested"][0])
    assert each[(0, 1)] == pytest.approx(1.44, abs=1e-12)
    assert each[(1, 3)] == pytest.approx(1.44, abs=1e-12)


def test_an_observed_row_read_whole_in_a_nested_batch_plate(float64):
    """y[m, n] ~ Normal(xKN[0], 1) with y: real[M, N, N]: row 0 whole for every element,
    so the minibatches' average (over all 6) is the full density by hand."""
    src = ("model F(xKN: real[K, N], y: real[M, N, N]) {\n plate m in M {\n"
           " plate n in N batch 2 {\n y ~ Normal(xKN[0], 1)\n }\n }\n}\n")
    y = torch.arange(M * N * N, dtype=torch.float64).reshape(M, N, N) / 8 - 2
    data = {"xKN": XKN, "y": y}
    want = float(torch.distributions.Normal(torch.tensor(XKN[0]), 1.0).log_prob(y).sum())
    m = ppl.compile(src)
    kwargs = m.bind(data)
    each = []
    for subset in itertools.combinations(range(N), B):
        model = pyro.poutine.condition(m.pyro_model, {"n": torch.tensor(subset)})
        each.append(float(pyro.poutine.trace(model).get_trace(**kwargs).log_prob_sum()))
    assert float(m.log_density({}, data)) == pytest.approx(want, abs=1e-9)
    assert sum(each) / len(each) == pytest.approx(want, abs=1e-9)


# two batch plates (nested: n batch 2 around m batch 1; siblings: n batch 2 and k batch
# 2) and latents drawn in batch plates, conditioned on each minibatch's rows: their
# density terms are scaled N / B (and M / 1) as the observed ones are, so the average
# over every pair of minibatches is the full density by hand
XNM = [[0.2, -0.3], [1.0, 0.5], [-1.5, 0.25], [0.75, 2.0]]
YNM = [[0.1, 0.4], [-0.2, 1.3], [0.9, -0.7], [0.0, 0.6]]
YK = [0.3, -1.0, 0.8]
Z, ZK = [0.3, -0.2, 1.1, 0.4], [0.2, -0.5, 0.9]
W = [[0.5, -0.1], [0.2, 0.3], [-0.4, 0.8], [1.2, -0.6]]
BNN = [[0.1 * (i - j) + 0.05 * i * j for j in range(N)] for i in range(N)]
HEAD2 = ("model G(x: real[N], A: real[K, M], xNM: real[N, M], yNM: real[N, M], yK: real[K], "
         "B: real[N, N]) {\n")
DATA2 = {"x": X, "A": A, "xNM": XNM, "yNM": YNM, "yK": YK, "B": BNN}
NESTED, SIBLINGS = {"n": (N, 2), "m": (M, 1)}, {"n": (N, 2), "k": (K, 2)}
PAIRS = {"i": (N, 2), "j": (N, 2)}  # two batch plates of one size, nested


def _lognormal(y, loc):
    return float(torch.distributions.Normal(_t(loc), 1.0).log_prob(_t(y)).sum())


def _rows(value, plate):
    return lambda sub: _t(value)[list(sub[plate])]


NM = [(n, m) for n in range(N) for m in range(M)]
MANY = {
    "nested-observed": (
        "plate n in N batch 2 {\n factor(x)\n plate m in M batch 1 {\n"
        " yNM ~ Normal(x[n] + A[0, m], 1)\n }\n}\n", NESTED, {},
        sum(X) + sum(_lognormal(YNM[n][m], X[n] + A[0][m]) for n, m in NM)),
    # over the outer plate's dim N, one [M] paired with m: read before both cuts it was
    # [M] against m's minibatch of 1 (Pyro's 'Shape mismatch inside plate('m')')
    "nested-column-sums": (
        "plate n in N batch 2 {\n plate m in M batch 1 {\n"
        " factor(sum(xNM, dim=0) * x[n])\n }\n}\n", NESTED, {},
        sum(sum(XNM[i][m] for i in range(N)) * X[n] for n, m in NM)),
    # column m whole (N numbers, each element's own): its softmax is not cut by n
    # (it was, by n laid out [2, 1]: torch's 'Index is supposed to be a vector')
    "nested-softmax-of-a-column": (
        "plate n in N batch 2 {\n plate m in M batch 1 {\n"
        " factor(softmax(xNM[:, m]) * A[0, m])\n }\n}\n", NESTED, {},
        N * sum(A[0])),
    "siblings": (
        "plate n in N batch 2 {\n factor(x * xNM[n, 0])\n}\n"
        "plate k in K batch 2 {\n yK ~ Normal(A[k, 0] + sum(x), 1)\n}\n", SIBLINGS, {},
        sum(X[n] * XNM[n][0] for n in range(N))
        + sum(_lognormal(YK[k], A[k][0] + sum(X)) for k in range(K))),
    "latent-in-a-batch-plate": (
        "plate n in N batch 2 {\n z ~ Normal(x, 1)\n factor(z * xNM[n, 1])\n}\n",
        {"n": (N, 2)}, {"z": (Z, _rows(Z, "n"))},
        sum(_lognormal(Z[n], X[n]) + Z[n] * XNM[n][1] for n in range(N))),
    "latent-in-nested-batch-plates": (
        "plate n in N batch 2 {\n plate m in M batch 1 {\n w ~ Normal(A[0, m] + x[n], 1)\n"
        " yNM ~ Normal(w, 1)\n }\n}\n", NESTED,
        {"w": (W, lambda sub: _t(W)[list(sub["n"])][:, list(sub["m"])])},
        sum(_lognormal(W[n][m], A[0][m] + X[n]) + _lognormal(YNM[n][m], W[n][m])
            for n, m in NM)),
    # z of the outer plate is [B, 1] in the model, one number per row of plate m
    "latent-of-the-outer-batch-plate-read-inside": (
        "plate n in N batch 2 {\n z ~ Normal(x, 1)\n plate m in M batch 1 {\n"
        " yNM ~ Normal(z * A[0, m], 1)\n }\n}\n", NESTED,
        {"z": (Z, lambda sub: _t(Z)[list(sub["n"])][:, None])},
        sum(_lognormal(Z[n], X[n]) for n in range(N))
        + sum(_lognormal(YNM[n][m], Z[n] * A[0][m]) for n, m in NM)),
    "pairs-of-one-size": (
        "plate i in N batch 2 {\n z ~ Normal(x, 1)\n plate j in N batch 2 {\n"
        " factor(z * B[i, j] + sum(B[i, :]))\n }\n}\n", PAIRS,
        {"z": (Z, lambda sub: _t(Z)[list(sub["i"])][:, None])},
        sum(_lognormal(Z[i], X[i]) for i in range(N))
        + sum(Z[i] * BNN[i][j] + sum(BNN[i]) for i in range(N) for j in range(N))),
    "latent-in-a-sibling-batch-plate": (
        "plate k in K batch 2 {\n zk ~ Normal(A[k, 0], 1)\n yK ~ Normal(zk + sum(x), 1)\n}\n"
        "plate n in N batch 2 {\n factor(x)\n}\n", {"k": (K, 2), "n": (N, 2)},
        {"zk": (ZK, _rows(ZK, "k"))},
        sum(_lognormal(ZK[k], A[k][0]) + _lognormal(YK[k], ZK[k] + sum(X)) for k in range(K))
        + sum(X)),
}


@pytest.mark.parametrize("name", list(MANY))
def test_the_average_over_the_minibatches_of_every_batch_plate_is_the_full_density(
        name, float64):
    src, plates, latents, want = MANY[name]
    full, each = _enumerate(HEAD2 + src + "}\n", DATA2, plates, latents)
    count = 1
    for size, b in plates.values():
        count *= math.comb(size, b)
    assert len(each) == count
    assert full == pytest.approx(want, abs=1e-12)
    assert sum(each.values()) / len(each) == pytest.approx(want, abs=1e-12)


def test_a_latents_term_in_one_minibatch_is_scaled_n_over_b(float64):
    """The minibatch {1, 3} of z ~ Normal(x, 1) in plate n batch 2: N / B times the two
    rows' terms, the latent's as the factor's."""
    src, plates, latents, _ = MANY["latent-in-a-batch-plate"]
    _, each = _enumerate(HEAD2 + src + "}\n", DATA2, plates, latents)
    want = N / 2 * sum(_lognormal(Z[n], X[n]) + Z[n] * XNM[n][1] for n in (1, 3))
    assert each[((1, 3),)] == pytest.approx(want, abs=1e-12)
