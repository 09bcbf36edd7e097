"""Neural processes (METHODS.md section 3): encoders, generator, losses, GP tasks, training,
the language surface and saving/loading."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import ppl
from ppl.runtime import neural_process as npr

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "np_gp.bdl"


@pytest.fixture(autouse=True)
def _one_thread_fresh_store():
    import pyro

    from ppl.runtime import reset_networks

    pyro.clear_param_store()
    reset_networks()
    yield
    pyro.clear_param_store()
    reset_networks()


def _batch(B=3, C=5, T=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    xc, yc = torch.randn(B, C, 1, generator=g), torch.randn(B, C, 1, generator=g)
    xt, yt = torch.randn(B, T, 1, generator=g), torch.randn(B, T, 1, generator=g)
    return xc, yc, xt, yt


# ---- shapes and the sigma floor -----------------------------------------------------

@pytest.mark.parametrize("family", ["cnp", "np", "anp", "mpnp", "ampnp", "ampnp_pa"])
def test_shapes(family):
    torch.manual_seed(0)
    m = npr.MODELS[family](1, 1, hidden=16, pseudo=4, samples=6, heads=2)
    xc, yc, xt, yt = _batch()
    mu, sigma = m.predict(xc, yc, xt)
    S = 1 if family == "cnp" else 6
    assert mu.shape == sigma.shape == (S, 3, 7, 1)
    d = m(xc, yc, xt)
    assert d.batch_shape == (3,) and d.event_shape == (7, 1)
    d1 = m(xc[0], yc[0], xt[0])
    assert d1.batch_shape == () and d1.event_shape == (7, 1)
    assert d1.sample().shape == (7, 1) and d1.log_prob(yt[0]).shape == ()
    assert m.pointwise_ll(xc, yc, xt, yt).shape == (3, 7)
    loss = m.loss(xc, yc, torch.cat([xc, xt], 1), torch.cat([yc, yt], 1), 3)
    assert loss.shape == () and torch.isfinite(loss)


def test_sigma_floor():
    raw = torch.tensor([-1e4, 0.0, 3.0], dtype=torch.float64)
    s = npr.sigma_floor(raw)
    assert s[0].item() == pytest.approx(0.1, abs=1e-12)
    assert s[1].item() == pytest.approx(0.1 + 0.9 * math.log(2.0), rel=1e-6)
    assert s[2].item() == pytest.approx(0.1 + 0.9 * math.log1p(math.exp(3.0)), rel=1e-6)
    # the decoder never goes under 0.1, even driven far negative
    dec = npr.Decoder(1, 4, 1, 8)
    with torch.no_grad():
        dec.net[-1].bias.fill_(-1e3)
    _, sigma = dec(torch.randn(5, 1), torch.randn(5, 4))
    assert torch.all(sigma >= 0.1) and sigma.min().item() == pytest.approx(0.1, abs=1e-6)


# ---- permutation invariance / equivariance -------------------------------------------

def test_encoders_permutation_invariant():
    torch.manual_seed(1)
    xc, yc, xt, _ = _batch(C=9)
    perm = torch.randperm(9)
    pool = npr.PoolingEncoder(1, 1, 16, 16)
    torch.testing.assert_close(pool(xc, yc), pool(xc[:, perm], yc[:, perm]))
    lat = npr.LatentEncoder(1, 1, 16)
    a, b = lat(xc, yc), lat(xc[:, perm], yc[:, perm])
    torch.testing.assert_close(a.loc, b.loc)
    torch.testing.assert_close(a.scale, b.scale)
    cross = npr.CrossAttnEncoder(1, 1, 16, 2)
    torch.testing.assert_close(cross(xc, yc, xt), cross(xc[:, perm], yc[:, perm], xt))
    # ... and equivariant in the targets
    tperm = torch.randperm(7)
    torch.testing.assert_close(cross(xc, yc, xt)[:, tperm], cross(xc, yc, xt[:, tperm]))


def test_pseudo_context_generator_equivariant():
    torch.manual_seed(2)
    gen = npr.PseudoContextGenerator(16, 2, inducing=4)
    rc, eps = torch.randn(3, 9, 16), torch.randn(3, 5, 16)
    # untrained (Out = 0), every pseudo point is the context's mean representation
    torch.testing.assert_close(gen(rc, eps), rc.mean(1, keepdim=True).expand(3, 5, 16))
    # with resample, a soft pick of the context: a convex combination of its
    # representations, so inside their coordinate-wise range, equal to the common value
    # when they all agree, and different from point to point
    gen.resample = True
    soft = gen(rc, eps)
    assert (soft <= rc.max(1, keepdim=True).values + 1e-6).all()
    assert (soft >= rc.min(1, keepdim=True).values - 1e-6).all()
    assert soft.std(1).min() > 0.05
    same = rc[:, :1].expand(3, 9, 16)
    torch.testing.assert_close(gen(same, eps), same[:, :1].expand(3, 5, 16))
    torch.nn.init.normal_(gen.out.weight)  # as after training: the noise matters
    out = gen(rc, eps)
    assert out.std(1).min() > 0.1  # pseudo points differ from each other
    assert out.shape == (3, 5, 16)
    cperm, pperm = torch.randperm(9), torch.randperm(5)
    for resample in (True, False):
        gen.resample = resample
        out = gen(rc, eps)
        torch.testing.assert_close(gen(rc[:, cperm], eps), out)           # context: invariant
        torch.testing.assert_close(gen(rc, eps[:, pperm]), out[:, pperm])  # noise: equivariant
    # the pseudo set depends on the context (it is not a function of the noise alone)
    assert not torch.allclose(gen(rc + 1.0, eps), out)


@pytest.mark.parametrize("cls,mode", [(npr.MPNP, "mean"), (npr.MPNP, "resample"),
                                      (npr.MPNP, "predictive"), (npr.MPNP, "mixed"),
                                      (npr.AMPNP, "mean"), (npr.AMPNP, "predictive"),
                                      (npr.AMPNP, "mixed"),
                                      (npr.AMPNPPseudoAttention, "mean")])
def test_mpnp_predictive_invariant_to_context_order(cls, mode):
    """Same noise: the predictive of every pseudo set is invariant to the order of the
    context and equivariant to the order of the targets (MPNP with each generator
    base, and the attentive AMPNP)."""
    torch.manual_seed(3)
    m = cls(1, 1, hidden=16, pseudo=4, samples=5, heads=2)
    m.gen.mode = mode
    torch.nn.init.normal_(m.gen.out.weight)  # as after training: the noise matters
    xc, yc, xt, _ = _batch(C=8)
    perm, tperm = torch.randperm(8), torch.randperm(7)
    torch.manual_seed(9)
    a = m.predict(xc, yc, xt)
    assert (a[0].std(0) > 1e-3).all()  # the pseudo sets give different predictives
    torch.manual_seed(9)
    b = m.predict(xc[:, perm], yc[:, perm], xt)
    torch.manual_seed(9)
    c = m.predict(xc, yc, xt[:, tperm])
    for i in (0, 1):
        torch.testing.assert_close(a[i], b[i])
        torch.testing.assert_close(a[i][:, :, tperm], c[i])


@pytest.mark.parametrize("cls", [npr.MPNP, npr.AMPNP])
def test_mpnp_predictive_imputation(cls):
    """The predictive base imputes R_j = pre(x~_j, mu_c(x~_j) + sigma_c(x~_j) e_j) with
    x~_j uniform on the context's input range (written out here from the same draws);
    an untrained generator (Out = 0) adds nothing to it; the imputation passes no
    gradient to the decoder (only the amortisation term trains the predictive it uses);
    and a wider amortised predictive gives more spread among the pseudo sets."""
    torch.manual_seed(4)
    m = cls(1, 1, hidden=16, pseudo=6, samples=3, heads=2)
    m.gen.predictive = True
    xc, yc, xt, yt = _batch(B=2, C=5)
    theta_c = m.enc.post(m.enc.embed(xc, yc).mean(-2))
    torch.manual_seed(7)
    got = m._imputed(xc, yc, theta_c, 3, 6)
    torch.manual_seed(7)
    lo, hi = xc.min(1, keepdim=True).values, xc.max(1, keepdim=True).values
    x = lo + (hi - lo) * torch.rand(2, 18, 1)
    det = (m.att(xc, yc, x),) if cls is npr.AMPNP else ()
    mu, sigma = m._decode(x, theta_c, *det)
    want = m.enc.embed(x, mu + sigma * torch.randn_like(mu))
    assert got.shape == (3, 2, 6, 16)
    for k in range(3):
        torch.testing.assert_close(got[k], want[:, 6 * k:6 * (k + 1)])
    assert ((x >= lo) & (x <= hi)).all()
    rc = m.enc.embed(xc, yc).unsqueeze(0).expand(3, -1, -1, -1)
    torch.testing.assert_close(m.gen(rc, torch.randn(3, 2, 6, 16), got), got)
    # the decoder gets gradient from the three terms of the loss, none from the imputation
    _, theta_k, _ = m.thetas(xc, yc, 3)
    grads = torch.autograd.grad(theta_k.sum(), list(m.dec.parameters()), allow_unused=True)
    assert all(g is None or float(g.abs().max()) == 0.0 for g in grads)
    # spread among the pseudo sets grows with the amortised predictive's sigma
    spread = []
    for raw_bias in (-5.0, 3.0, 6.0):            # sigma_c about 0.1, 2.8, 5.5
        with torch.no_grad():
            m.dec.net[-1].bias[1] = raw_bias
        torch.manual_seed(8)
        spread.append(float(m.thetas(xc, yc, 20)[1].std(0).mean()))
    assert spread[0] < spread[1] < spread[2] and spread[2] > 3 * spread[0]


def test_mpnp_mixed_generator_kinds_and_equivariance():
    """The mixed generator alternates the kinds: even-numbered pseudo sets take the mean
    base and odd-numbered ones the predictive base, ceil(K/2) and floor(K/2) of them,
    each set's R' written out here from the same draws (noise first, then the
    imputations of the predictive-base sets only); untrained (Out = 0), a mean-base set
    gives theta_k = theta_c exactly and a predictive-base set does not; and each set is
    equivariant to a joint permutation of its noise and base and invariant to the
    context's order."""
    assert npr.PseudoContextGenerator(8, 2).predictive_sets(3) == [False] * 3
    gen = npr.PseudoContextGenerator(8, 2)
    gen.mode = "mixed"
    assert gen.predictive_sets(5) == [False, True, False, True, False]
    assert sum(gen.predictive_sets(50)) == 25 and sum(gen.predictive_sets(4)) == 2
    with pytest.raises(ValueError, match="unknown pseudo-context generator 'mix'"):
        gen.mode = "mix"
    torch.manual_seed(4)
    m = npr.MPNP(1, 1, hidden=16, pseudo=6, samples=5, heads=2)
    m.gen.mode = "mixed"
    assert (m.gen.mode, m.gen.predictive, m.gen.resample) == ("mixed", False, False)
    xc, yc, _, _ = _batch(B=2, C=5)
    rc = m.enc.embed(xc, yc)
    theta_c = m.enc.post(rc.mean(-2))
    torch.manual_seed(7)
    got_c, got_k, got_p, rp = m._sets(xc, yc, 5)
    torch.manual_seed(7)
    eps = torch.randn(5, 2, 6, 16)
    imputed = m._imputed(xc, yc, theta_c, 2, 6)                 # sets 1 and 3 only
    mean = rc.mean(1, keepdim=True).expand(2, 6, 16)
    base = torch.stack([mean, imputed[0], mean, imputed[1], mean])
    want = m.gen(rc.expand(5, -1, -1, -1), eps, base)
    torch.testing.assert_close(rp, want)
    torch.testing.assert_close(got_c, theta_c)
    for k in (0, 2, 4):                                         # untrained: Out = 0
        torch.testing.assert_close(got_k[k], theta_c)
        torch.testing.assert_close(got_p[k], theta_c)
    for k in (1, 3):
        assert (got_k[k] - theta_c).abs().max() > 1e-3
    # tag_kinds: the learned offset moves the predictive-base sets' points only
    m.gen.tag_kinds = True
    with torch.no_grad():
        m.gen.kind_tag.copy_(torch.linspace(-1, 1, 16))
    torch.manual_seed(7)
    tagged = m._sets(xc, yc, 5)[3]
    shift = torch.tensor([0.0, 1, 0, 1, 0])[:, None, None, None] * torch.linspace(-1, 1, 16)
    torch.testing.assert_close(tagged, want + shift)
    m.gen.tag_kinds = False
    torch.nn.init.normal_(m.gen.out.weight)  # as after training: the noise matters
    rce = rc.expand(5, -1, -1, -1)
    out = m.gen(rce, eps, base)
    cperm, pperm = torch.randperm(5), torch.randperm(6)
    torch.testing.assert_close(m.gen(rce[:, :, cperm], eps, base), out)
    torch.testing.assert_close(m.gen(rce, eps[:, :, pperm], base[:, :, pperm]),
                               out[:, :, pperm])
    assert out.std(2).min() > 0.1          # pseudo points of a set differ from each other


def test_mpnp_mixed_loss_hand_computed():
    """The mixed MPNP's loss is the three-term loss over K = 2 sets of the two kinds
    (set 0 mean base, set 1 predictive base), written out per point: the marginal and
    pseudo terms are log(1/2 e^l_0 + 1/2 e^l_1), the stratified estimate of the log of the
    equal-weight mixture of the two kinds' likelihoods, so it lies within log 2 of the
    better kind (log 1/2 + max_k l_k <= term <= max_k l_k); with ``per_kind_bound`` each
    kind's own bound, weighted by its share."""
    torch.manual_seed(6)
    m = npr.MPNP(1, 1, hidden=8, pseudo=2, heads=2)
    m.gen.mode = "mixed"
    torch.nn.init.normal_(m.gen.out.weight, std=0.3)
    xc, yc = torch.tensor([[[-0.5], [0.4]]]), torch.tensor([[[0.3], [-0.2]]])
    x = torch.cat([xc, torch.tensor([[[0.9]]])], 1)
    y = torch.cat([yc, torch.tensor([[[0.6]]])], 1)
    torch.manual_seed(11)
    got = float(m.loss(xc, yc, x, y, num_samples=2).detach())
    torch.manual_seed(11)
    with torch.no_grad():
        theta_c, theta_k, theta_p = m.thetas(xc, yc, 2)

    def joint(theta):  # sum over the three points of log N(y_i; mu(x_i), sigma(x_i)^2)
        with torch.no_grad():
            mu, s = m.dec(x[0], theta.expand(3, -1))
        return sum(_lognorm(float(y[0, i, 0]), float(mu[i, 0]), float(s[i, 0]))
                   for i in range(3))

    amort = joint(theta_c[0])
    l_k = [joint(theta_k[k, 0]) for k in range(2)]
    l_p = [joint(theta_p[k, 0]) for k in range(2)]
    marg = math.log(0.5 * math.exp(l_k[0]) + 0.5 * math.exp(l_k[1]))
    pseudo = math.log(0.5 * math.exp(l_p[0]) + 0.5 * math.exp(l_p[1]))
    assert got == pytest.approx(-(amort + marg + pseudo) / 3, rel=1e-5)
    assert abs(l_k[0] - l_k[1]) > 1e-3       # the two kinds give different components
    for term, ls in ((marg, l_k), (pseudo, l_p)):
        assert math.log(0.5) + max(ls) <= term <= max(ls)
    # per-kind bounds: each kind's own log-mean-exp (one set each here) weighted by its
    # share, 1/2 l_0 + 1/2 l_1 <= log(1/2 e^l_0 + 1/2 e^l_1): a looser bound of the same
    # mixture
    m.gen.per_kind_bound = True
    torch.manual_seed(11)
    got = float(m.loss(xc, yc, x, y, num_samples=2).detach())
    assert got == pytest.approx(-(amort + sum(l_k) / 2 + sum(l_p) / 2) / 3, rel=1e-5)
    assert sum(l_k) / 2 < marg and sum(l_p) / 2 < pseudo
    # K = 5 (three mean-base sets, two predictive-base): shares 3/5 and 2/5
    g = torch.Generator().manual_seed(2)
    mu = torch.randn(5, 1, 3, 1, generator=g)
    s = 0.5 + torch.rand(5, 1, 3, 1, generator=g)
    ll = [torch.distributions.Normal(mu[k, 0, :, 0], s[k, 0, :, 0]).log_prob(y[0, :, 0]).sum()
          for k in range(5)]

    def lme(v):
        return torch.logsumexp(torch.stack(v), 0) - math.log(len(v))

    term = 0.6 * lme(ll[0::2]) + 0.4 * lme(ll[1::2])
    amort5 = torch.distributions.Normal(mu[0, 0, :, 0], s[0, 0, :, 0]).log_prob(y[0, :, 0]).sum()
    got = npr.mpnp_loss(mu[:1], s[:1], mu, s, mu, s, y, m.gen.predictive_sets(5))
    torch.testing.assert_close(got, -(amort5 + 2 * term) / 3)


def test_mpnp_mixed_device_and_dtype():
    """The mixed generator's tensors follow the module: on the meta device (no data, no
    host copies) in float64, the predictive and the loss stay there."""
    for per_kind in (False, True):   # the per-kind bound reads nothing back to the host
        m = npr.MPNP(1, 1, hidden=16, pseudo=4, samples=5, heads=2).to("meta", torch.float64)
        m.gen.mode = "mixed"
        m.gen.per_kind_bound = m.gen.tag_kinds = per_kind
        xc, yc, xt = (torch.empty(2, n, 1, device="meta") for n in (5, 5, 3))
        mu, sigma = m.predict(xc, yc, xt)
        assert mu.device.type == sigma.device.type == "meta"
        assert mu.dtype == torch.float64 and mu.shape == (5, 2, 3, 1)
        validate = torch.distributions.Distribution._validate_args
        torch.distributions.Distribution.set_default_validate_args(False)  # no .item() on meta
        try:
            loss = m.loss(xc, yc, torch.cat([xc, xt], 1), torch.cat([yc, xt], 1), 4)
        finally:
            torch.distributions.Distribution.set_default_validate_args(validate)
        assert loss.device.type == "meta" and loss.dtype == torch.float64 and loss.shape == ()


def _ampnp_attention_ref(m, xc, yc, x, rp=None, real=True):
    """r*(x; S) of one task and one set S, written out point by point: keys k(x_i) and
    values v([x_i, y_i]) for the real points, W_k R'_j and W_v R'_j for the pseudo ones,
    then ANP's attention block on the concatenation."""
    keys, vals = [], []
    if real:
        keys += [m.att.k(xc[i]) for i in range(xc.shape[0])]
        vals += [m.att.v(torch.cat([xc[i], yc[i]])) for i in range(xc.shape[0])]
    if rp is not None:
        keys += [m.pseudo_k(r) for r in rp]
        vals += [m.pseudo_v(r) for r in rp]
    q = m.att.q(x).unsqueeze(0)
    k, v = torch.stack(keys).unsqueeze(0), torch.stack(vals).unsqueeze(0)
    h = m.att.ln1(q + m.att.att(q, k, v, need_weights=False)[0])
    return m.att.ln2(h + m.att.ff(h))[0]


def test_ampnp_generator_equivariant_and_attention_path():
    """AMPNP's pseudo-context generator is exchangeable (invariant to the encoded
    context's order, equivariant to the noise's), and its predictive depends on the
    context through the cross-attention path too: two contexts with the same pooled
    representation but different points give different predictives, which a mean-pooled
    MPNP cannot tell apart."""
    torch.manual_seed(12)
    m = npr.AMPNP(1, 1, hidden=16, pseudo=4, samples=3, heads=2)
    torch.nn.init.normal_(m.gen.out.weight)
    xc, yc, xt, _ = _batch(C=6)
    rc, eps = m.enc.embed(xc, yc), torch.randn(3, 4, 16)
    out = m.gen(rc, eps)
    cperm, pperm = torch.randperm(6), torch.randperm(4)
    torch.testing.assert_close(m.gen(rc[:, cperm], eps), out)
    torch.testing.assert_close(m.gen(rc, eps[:, pperm]), out[:, pperm])
    # untrained generator (zero output layer) with the mean base: every pseudo set gives
    # theta_c, so all K components coincide and equal the decoder at [x, r*(x), theta_c]
    fresh = npr.AMPNP(1, 1, hidden=16, samples=3, heads=2)
    mu, sig = fresh.predict(xc, yc, xt)
    theta_c = fresh.enc(xc, yc)
    want = fresh.dec(xt, torch.cat([fresh.att(xc, yc, xt),
                                    theta_c.unsqueeze(1).expand(-1, 7, -1)], -1))
    for k in range(3):
        torch.testing.assert_close(mu[k], want[0])
        torch.testing.assert_close(sig[k], want[1])
    # the attention path sees the points: with the pooled path made blind (the encoder's
    # last layer zeroed, so theta is the same for every context) AMPNP still tells two
    # contexts apart, while a mean-pooled MPNP with the same blind encoder cannot
    xc2, yc2 = xc.flip(-2) * 0.5 + 0.3, -yc
    for net in (fresh, mpnp := npr.MPNP(1, 1, hidden=16, samples=3, heads=2)):
        last = [mod for mod in net.enc.post.modules() if isinstance(mod, torch.nn.Linear)][-1]
        torch.nn.init.zeros_(last.weight)
        torch.nn.init.zeros_(last.bias)
    torch.testing.assert_close(fresh.enc(xc, yc), fresh.enc(xc2, yc2))
    assert (fresh.predict(xc, yc, xt)[0] - fresh.predict(xc2, yc2, xt)[0]).abs().max() > 1e-3
    torch.testing.assert_close(mpnp.predict(xc, yc, xt)[0], mpnp.predict(xc2, yc2, xt)[0])


def test_ampnp_pseudo_attention_reads_each_set():
    """AMPNPPseudoAttention (same generator as AMPNP, tested above): the attention path
    of pseudo set k reads the real context and that set's pseudo points (checked against
    a point-by-point reference), is invariant to the order of both, and differs across
    sets, so each mixture component has its own attention output."""
    torch.manual_seed(12)
    m = npr.AMPNPPseudoAttention(1, 1, hidden=16, pseudo=4, samples=3, heads=2)
    torch.nn.init.normal_(m.gen.out.weight)
    xc, yc, xt, _ = _batch(C=6)
    rc = m.enc.embed(xc, yc)
    cperm, pperm = torch.randperm(6), torch.randperm(4)
    # K = 2 pseudo sets of the 3 tasks
    rp = m.gen(rc.expand(2, -1, -1, -1), torch.randn(2, 3, 4, 16))
    both = m.attend(xc, yc, xt, rp)
    alone = m.attend(xc, yc, xt, rp, real=False)
    real = m.attend(xc, yc, xt)
    assert both.shape == alone.shape == (2, 3, 7, 16) and real.shape == (3, 7, 16)
    for b in range(3):
        torch.testing.assert_close(real[b], _ampnp_attention_ref(m, xc[b], yc[b], xt[b]))
        for k in range(2):
            torch.testing.assert_close(
                both[k, b], _ampnp_attention_ref(m, xc[b], yc[b], xt[b], rp[k, b]))
            torch.testing.assert_close(
                alone[k, b], _ampnp_attention_ref(m, xc[b], yc[b], xt[b], rp[k, b], False))
    # invariant to the order of the context and of the points within a pseudo set
    torch.testing.assert_close(m.attend(xc[:, cperm], yc[:, cperm], xt, rp[:, :, pperm]), both)
    # the sets' attention outputs differ, and from the real context's alone
    assert (both[0] - both[1]).abs().max() > 1e-2
    assert (both[0] - real).abs().max() > 1e-2
    # the pseudo-only path does not see the real points except through R'
    torch.testing.assert_close(m.attend(xc + 5.0, -yc, xt, rp, real=False), alone)
    # an untrained generator (zero output layer, mean base) makes every pseudo point the
    # context's mean representation: all K components coincide
    fresh = npr.AMPNPPseudoAttention(1, 1, hidden=16, samples=3, heads=2)
    mu, sig = fresh.predict(xc, yc, xt)
    for k in (1, 2):
        torch.testing.assert_close(mu[k], mu[0])
        torch.testing.assert_close(sig[k], sig[0])


# ---- losses and log-likelihoods on hand-computed cases ------------------------------

def _lognorm(y, m, s):
    return -0.5 * math.log(2 * math.pi) - math.log(s) - 0.5 * ((y - m) / s) ** 2


def test_mpnp_loss_hand_computed():
    # one task, n = 2 points, K = 2 pseudo sets, y_dim = 1
    y = torch.tensor([[[0.5], [-1.0]]])
    mu_c, s_c = torch.tensor([[[[0.0], [0.0]]]]), torch.tensor([[[[1.0], [2.0]]]])
    mu_k = torch.tensor([[[[0.5], [-0.5]]], [[[1.0], [0.0]]]])
    s_k = torch.tensor([[[[0.5], [0.5]]], [[[1.0], [1.0]]]])
    mu_p = torch.tensor([[[[0.0], [-1.0]]], [[[0.2], [-0.8]]]])
    s_p = torch.tensor([[[[2.0], [0.3]]], [[[0.4], [0.4]]]])
    got = npr.mpnp_loss(mu_c, s_c, mu_k, s_k, mu_p, s_p, y).item()
    ys = [0.5, -1.0]
    amort = _lognorm(0.5, 0, 1) + _lognorm(-1.0, 0, 2)

    def lme(rows):  # rows: per pseudo set, (means, sds) of the two points
        return math.log(0.5 * sum(math.exp(sum(_lognorm(yv, m, s) for yv, m, s in
                                               zip(ys, ms, ss, strict=True)))
                                  for ms, ss in rows))

    marg = lme([([0.5, -0.5], [0.5, 0.5]), ([1.0, 0.0], [1.0, 1.0])])
    pseudo = lme([([0.0, -1.0], [2.0, 0.3]), ([0.2, -0.8], [0.4, 0.4])])
    assert got == pytest.approx(-(amort + marg + pseudo) / 2, rel=1e-6)


@pytest.mark.parametrize("cls", [npr.MPNP, npr.AMPNP, npr.AMPNPPseudoAttention])
def test_mpnp_loss_uses_context_pseudo_and_union(cls):
    """MPNP.loss is mpnp_loss of the decoder at theta_c, theta_k (context u pseudo) and
    theta'_k (pseudo alone), with the same noise; AMPNP's decoder also sees r*(x), the
    cross-attention to the real context, beside every theta, and AMPNPPseudoAttention's
    the cross-attention to the same set as its theta (real context / context u pseudo
    set k / pseudo set k alone)."""
    torch.manual_seed(4)
    m = cls(1, 1, hidden=16, pseudo=3, heads=2)
    torch.nn.init.normal_(m.gen.out.weight, std=0.3)  # pseudo sets that differ
    xc, yc, xt, yt = _batch(B=2, C=4, T=3)
    x, y = torch.cat([xc, xt], 1), torch.cat([yc, yt], 1)
    torch.manual_seed(5)
    got = m.loss(xc, yc, x, y, num_samples=3)
    torch.manual_seed(5)
    rc = m.enc.embed(xc, yc)
    eps = torch.randn(3, 2, 3, 16)
    rp = m.gen(rc.expand(3, -1, -1, -1), eps)
    lls = []
    for theta in (m.enc.post(rc.mean(1)).unsqueeze(0),
                  m.enc.post(torch.cat([rc.expand(3, -1, -1, -1), rp], 2).mean(2)),
                  m.enc.post(rp.mean(2))):
        rep = theta.unsqueeze(2).expand(-1, -1, x.shape[1], -1)
        if cls is npr.AMPNP:
            rep = torch.cat([m.att(xc, yc, x).expand(theta.shape[0], -1, -1, -1), rep], -1)
        if cls is npr.AMPNPPseudoAttention:  # the attention reads the same set as theta
            sets = {0: lambda k, b: (xc[b], yc[b], x[b]),
                    1: lambda k, b: (xc[b], yc[b], x[b], rp[k, b]),
                    2: lambda k, b: (xc[b], yc[b], x[b], rp[k, b], False)}[len(lls)]
            att = torch.stack([torch.stack([_ampnp_attention_ref(m, *sets(k, b))
                                            for b in range(2)])
                               for k in range(theta.shape[0])])
            rep = torch.cat([att, rep], -1)
        mu, s = m.dec(x.expand(theta.shape[0], -1, -1, -1), rep)
        lls.append(torch.distributions.Normal(mu, s).log_prob(y).sum((-1, -2)))
    want = -(lls[0][0] + torch.logsumexp(lls[1], 0) - math.log(3)
             + torch.logsumexp(lls[2], 0) - math.log(3)) / x.shape[1]
    torch.testing.assert_close(got, want.mean())
    assert lls[1].std(0).min() > 1e-3  # the K pseudo sets differ: the mixture matters


def test_np_loss_importance_weighted():
    torch.manual_seed(6)
    m = npr.NP(1, 1, hidden=8)
    xc, yc, xt, yt = _batch(B=2, C=4, T=3)
    x, y = torch.cat([xc, xt], 1), torch.cat([yc, yt], 1)
    torch.manual_seed(7)
    got = m.loss(xc, yc, x, y, num_samples=5)
    torch.manual_seed(7)
    pz, qz = m.lat(xc, yc), m.lat(x, y)
    z = qz.rsample((5,))
    mu, s = m._decode(xc, yc, x, z)
    log_w = torch.distributions.Normal(mu, s).log_prob(y).sum((-1, -2)) \
        + pz.log_prob(z).sum(-1) - qz.log_prob(z).sum(-1)
    want = -((torch.logsumexp(log_w, 0) - math.log(5)) / 7).mean()
    torch.testing.assert_close(got, want)


def test_loglik_known_answer():
    """A CNP whose decoder outputs mu = 0.3 and raw sigma = b everywhere: the per-point
    log-likelihood is log N(y; 0.3, (0.1 + 0.9 softplus b)^2) exactly; the mixture
    predictive of a stochastic model is the log-mean-exp of its components' joints."""
    m = npr.CNP(1, 1, hidden=8)
    with torch.no_grad():
        last = m.dec.net[-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.3, -0.5]))
    xc, yc, xt, yt = _batch(B=2, C=3, T=4)
    s = 0.1 + 0.9 * math.log1p(math.exp(-0.5))
    want = torch.tensor([[_lognorm(float(v), 0.3, s) for v in row.reshape(-1)] for row in yt])
    torch.testing.assert_close(m.pointwise_ll(xc, yc, xt, yt), want.to(torch.float32))
    torch.testing.assert_close(m(xc, yc, xt).log_prob(yt), want.sum(-1).to(torch.float32))
    # mixture: MPNP predictive of one task = logmeanexp over the S draws of the joint
    torch.manual_seed(8)
    mp = npr.MPNP(1, 1, hidden=8, pseudo=2, samples=4, heads=2)
    torch.manual_seed(11)
    d = mp(xc[0], yc[0], xt[0])
    torch.manual_seed(11)
    mu, sig = mp.predict(xc[:1], yc[:1], xt[:1])
    joint = torch.distributions.Normal(mu, sig).log_prob(yt[:1]).sum((-1, -2))[:, 0]
    torch.testing.assert_close(d.log_prob(yt[0]), torch.logsumexp(joint, 0) - math.log(4))


def test_width_ladder_is_the_loo_evidence_weighted_scale_mixture():
    """The width ladder: the leave-one-out amortised predictive equals the network run on
    the context without each point; the weights are the softmax over lambda of the
    context's leave-one-out log-likelihood at width lambda sigma; the predictive is
    sum_j w_j (1/S) sum_s N(mu_s, (lambda_j sigma_s)^2) per point and jointly per draw
    (forward); a ladder of one width is the plain model; a context far off the amortised
    predictive puts the weight on the widest component; the weights do not depend on
    the context's order; families without a mean-pooled amortised path refuse it."""
    xc, yc, xt, yt = _batch(B=2, C=5, T=4, seed=3)
    lams = (1.0, 2.0, 4.0)
    for cls in (npr.CNP, npr.MPNP):
        torch.manual_seed(4)
        m = cls(1, 1, hidden=8, pseudo=3, samples=6, heads=2).eval()
        if cls is npr.MPNP:
            torch.nn.init.normal_(m.gen.out.weight, std=0.3)  # pseudo sets that differ
        with torch.no_grad():
            mu_loo, s_loo = m._loo_amortised(xc, yc)
            for i in range(5):
                keep = [j for j in range(5) if j != i]
                if cls is npr.CNP:
                    mu_i, s_i = m.predict(xc[:, keep], yc[:, keep], xc[:, i:i + 1])
                else:  # the amortised predictive: theta_c of the other points
                    theta = m.enc(xc[:, keep], yc[:, keep]).unsqueeze(0)
                    mu_i, s_i = m._decode(xc[:, i:i + 1], theta)
                torch.testing.assert_close(mu_loo[:, i], mu_i[0, :, 0])
                torch.testing.assert_close(s_loo[:, i], s_i[0, :, 0])
            m.width_ladder = lams
            ev = torch.stack([torch.distributions.Normal(mu_loo, lam * s_loo).log_prob(yc)
                              .sum((-1, -2)) for lam in lams])
            lw = m.width_log_weights(xc, yc)
            torch.testing.assert_close(lw, ev - torch.logsumexp(ev, 0))
            perm = torch.randperm(5)
            torch.testing.assert_close(m.width_log_weights(xc[:, perm], yc[:, perm]), lw)
            torch.manual_seed(9)
            got = m.pointwise_ll(xc, yc, xt, yt)
            torch.manual_seed(9)
            mu, sig = m.predict(xc, yc, xt)
            S = mu.shape[0]
            comp = torch.stack([torch.distributions.Normal(mu, lam * sig).log_prob(yt)[..., 0]
                                for lam in lams])                       # [J, S, B, T]
            want = torch.logsumexp(lw[:, None, :, None] + comp, (0, 1)) - math.log(S)
            torch.testing.assert_close(got, want)
            torch.manual_seed(9)
            joint = m(xc, yc, xt).log_prob(yt)
            torch.testing.assert_close(
                joint, torch.logsumexp(lw[:, None] + comp.sum(-1), (0, 1)) - math.log(S))
            # far off the amortised predictive: the weight goes to the widest width
            assert (m.width_log_weights(xc, 30 * yc)[-1].exp() > 0.99).all()
            m.width_ladder = (1.0,)
            torch.manual_seed(9)
            one = m.pointwise_ll(xc, yc, xt, yt)
            m.width_ladder = None
            torch.manual_seed(9)
            torch.testing.assert_close(one, m.pointwise_ll(xc, yc, xt, yt))
    for cls in (npr.NP, npr.AMPNP):
        m = cls(1, 1, hidden=8, heads=2)
        m.width_ladder = lams
        with pytest.raises(ValueError, match="mean-pooled"):
            m.pointwise_ll(xc, yc, xt, yt)



def test_width_ladder_refuses_widths_that_are_not_positive():
    """Setting width_ladder checks every lambda is a finite number > 0 (a width of 0
    would put a zero sd in the mixture, a negative one is no Gaussian): ValueError at the
    assignment, the previous ladder kept; None turns it off; which families have the
    leave-one-out path the ladder needs is known from the class alone."""
    m = npr.CNP(1, 1, hidden=8)
    m.width_ladder = [1, 2]
    assert m.width_ladder == (1.0, 2.0)
    for bad in ((1.0, 0.0), (1.0, -2.0), (), (1.0, float("nan")), (float("inf"),)):
        with pytest.raises(ValueError, match="finite numbers > 0"):
            m.width_ladder = bad
        assert m.width_ladder == (1.0, 2.0)
    m.width_ladder = None
    assert m.width_ladder is None
    assert npr.CNP.has_width_ladder() and npr.MPNP.has_width_ladder()
    assert not any(c.has_width_ladder() for c in (npr.NP, npr.ANP, npr.AMPNP,
                                                  npr.AMPNPPseudoAttention))


# ---- GP task sources ----------------------------------------------------------------

@pytest.mark.parametrize("kernel", ["rbf", "matern52", "periodic"])
def test_gp_sampler_covariance_matches_kernel(kernel):
    src = npr.GPTasks(kernel, noise=0.02)
    n = 20000
    x = torch.tensor([-1.0, -0.8, -0.5, 0.1, 0.3], dtype=torch.float64)
    xs = x.reshape(1, 5, 1).expand(n, 5, 1)
    hyper = {"lengthscale": torch.full((n,), 0.4, dtype=torch.float64),
             "scale": torch.full((n,), 0.7, dtype=torch.float64),
             "period": torch.full((n,), 0.9, dtype=torch.float64)}
    y, _ = src.sample_f(xs, torch.Generator().manual_seed(0), hyper=hyper)
    emp = torch.cov(y[..., 0].T)
    d = (x[:, None] - x[None, :]).abs()
    if kernel == "rbf":
        k = 0.49 * torch.exp(-0.5 * (d / 0.4) ** 2)
    elif kernel == "matern52":
        r = math.sqrt(5) * d / 0.4
        k = 0.49 * (1 + r + r ** 2 / 3) * torch.exp(-r)
    else:
        k = 0.49 * torch.exp(-2 * torch.sin(math.pi * d / 0.9) ** 2 / 0.4 ** 2)
    k = k + (0.02 ** 2 + 1e-5) * torch.eye(5, dtype=torch.float64)
    se = torch.sqrt((torch.diag(k)[:, None] * torch.diag(k)[None, :] + k ** 2) / n)
    assert torch.all((emp - k).abs() < 4.5 * se), (emp - k).abs() / se


def test_gp_tasks_protocol():
    g = torch.Generator().manual_seed(0)
    for kernel in npr.KERNELS:
        src = npr.GPTasks(kernel)
        for _ in range(5):
            b = src.sample(4, g)
            assert 3 <= b.num_ctx <= 46 and b.xt.shape[1] >= 3 and b.x.shape[1] <= 50
            assert b.x.min() >= -2 and b.x.max() <= 2
            torch.testing.assert_close(b.x[:, :b.num_ctx], b.xc)
    # per-task hyperparameters are drawn in their ranges
    _, hyper = npr.GPTasks("rbf", lengthscale=(0.2, 0.3)).sample_f(
        torch.zeros(500, 2, 1), torch.Generator().manual_seed(1))
    ls = hyper["lengthscale"]
    assert ls.min() >= 0.2 and ls.max() <= 0.3 and ls.std() > 0.02
    # Student-t noise: heavier tails than the Gaussian-noise RBF tasks at the same f
    t = npr._student_t(2.1, (200000,), torch.Generator().manual_seed(2))
    # P(|T| > 3) for nu = 2.1 is about 0.090 (vs 0.0027 for a normal)
    frac = (t.abs() > 3).double().mean().item()
    assert abs(frac - 0.0904) < 4 * math.sqrt(0.0904 * 0.91 / 200000)


def test_task_file_roundtrip(tmp_path):
    b = npr.GPTasks("rbf").sample(6, torch.Generator().manual_seed(0))
    npr.save_tasks(tmp_path / "t.npz", b)
    src = npr.FileTasks(tmp_path / "t.npz")
    assert src.num_tasks == 6
    got = src.sample(3, torch.Generator().manual_seed(1))
    assert got.xc.shape == (3, b.num_ctx, 1) and got.x.shape == (3, b.x.shape[1], 1)


# ---- training ------------------------------------------------------------------------

@pytest.mark.parametrize("family,steps", [("cnp", 150), ("mpnp", 150), ("ampnp", 150),
                                          ("ampnp_pa", 150)])
def test_training_improves_target_loglik(family, steps):
    torch.manual_seed(0)
    m = npr.MODELS[family](1, 1, hidden=32, pseudo=4, samples=10, heads=2)
    ev = npr.GPTasks().sample(32, torch.Generator().manual_seed(123))
    torch.manual_seed(1)
    _, before = npr.evaluate(m, ev, 10)
    losses = npr.train(m, npr.GPTasks(), steps, 16, lr=3e-3,
                       gen=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    _, after = npr.evaluate(m, ev, 10)
    assert sum(losses[-10:]) < sum(losses[:10])
    # same 32 held-out tasks before and after: a paired comparison
    diff = after - before
    assert diff.mean() > 0.1 and diff.mean() / (diff.std() / 32 ** 0.5) > 2, diff


@pytest.mark.parametrize("cls", [npr.ANP, npr.AMPNP, npr.AMPNPPseudoAttention])
def test_save_load_roundtrip(tmp_path, cls):
    torch.manual_seed(0)
    m = cls(1, 1, hidden=8, heads=2, samples=3).eval()
    npr.save_trained(tmp_path / "m.pt", m, "model X() {}")
    m2, src = npr.load_trained(tmp_path / "m.pt")
    assert src == "model X() {}" and type(m2) is cls
    xc, yc, xt, _ = _batch()
    torch.manual_seed(3)
    a = m.predict(xc, yc, xt)
    torch.manual_seed(3)
    b = m2.predict(xc, yc, xt)
    torch.testing.assert_close(a, b)


def test_save_load_keeps_the_generator_mode_and_reads_files_without_its_readouts(tmp_path):
    """A resampling-base or predictive-base MPNP reloads as one (its predictions are the
    trained model's);
    a mean-base file saved before the resampling read-outs existed (no gen.pick_*)
    loads exactly; any other mismatch is a clear error."""
    torch.manual_seed(0)
    m = npr.MPNP(1, 1, hidden=8, heads=2, samples=3, pseudo=4).eval()
    m.gen.resample = True
    npr.save_trained(tmp_path / "r.pt", m)
    m2, _ = npr.load_trained(tmp_path / "r.pt")
    assert m2.gen.resample
    xc, yc, xt, _ = _batch()
    torch.manual_seed(3)
    a = m.predict(xc, yc, xt)
    torch.manual_seed(3)
    torch.testing.assert_close(a, m2.predict(xc, yc, xt))
    m.gen.resample, m.gen.predictive = False, True    # the predictive base: same check
    npr.save_trained(tmp_path / "p.pt", m)
    mp, _ = npr.load_trained(tmp_path / "p.pt")
    assert mp.gen.predictive and not mp.gen.resample
    torch.manual_seed(3)
    a = m.predict(xc, yc, xt)
    torch.manual_seed(3)
    torch.testing.assert_close(a, mp.predict(xc, yc, xt))
    m.gen.mode = "mixed"                              # the mixed generator: same check
    npr.save_trained(tmp_path / "x.pt", m)
    mx, _ = npr.load_trained(tmp_path / "x.pt")
    assert mx.gen.mode == "mixed" and not mx.gen.per_kind_bound
    m.gen.per_kind_bound = m.gen.tag_kinds = True
    with torch.no_grad():
        m.gen.kind_tag.fill_(0.3)
    npr.save_trained(tmp_path / "xk.pt", m)
    mk = npr.load_trained(tmp_path / "xk.pt")[0]
    assert mk.gen.per_kind_bound and mk.gen.tag_kinds
    torch.manual_seed(3)
    a = m.predict(xc, yc, xt)
    torch.manual_seed(3)
    torch.testing.assert_close(a, mk.predict(xc, yc, xt))
    m.gen.per_kind_bound = m.gen.tag_kinds = False
    with torch.no_grad():
        m.gen.kind_tag.zero_()
    torch.manual_seed(3)
    a = m.predict(xc, yc, xt)
    torch.manual_seed(3)
    torch.testing.assert_close(a, mx.predict(xc, yc, xt))
    m.gen.mode = "mean"
    npr.save_trained(tmp_path / "old.pt", m)
    blob = torch.load(tmp_path / "old.pt", weights_only=True)
    blob["state_dict"] = {k: v for k, v in blob["state_dict"].items()
                          if not k.startswith("gen.pick_") and k != "gen.kind_tag"}
    for key in ("generator", "per_kind_bound", "tag_kinds"):   # before any mode was saved
        del blob[key]
    # files that recorded the mode as one flag per base still load with their mode
    torch.save({**blob, "resample": False, "predictive": True}, tmp_path / "flags.pt")
    assert npr.load_trained(tmp_path / "flags.pt")[0].gen.mode == "predictive"
    torch.save(blob, tmp_path / "old.pt")
    with pytest.warns(UserWarning, match="the default \\(mean\\) base is assumed"):
        m3, _ = npr.load_trained(tmp_path / "old.pt")
    torch.manual_seed(3)
    a = m.predict(xc, yc, xt)
    torch.manual_seed(3)
    torch.testing.assert_close(a, m3.predict(xc, yc, xt))
    # a pseudo-attention model saved while it was called "ampnp" loads as ampnp_pa
    pa = npr.AMPNPPseudoAttention(1, 1, hidden=8, heads=2, samples=3)
    npr.save_trained(tmp_path / "pa.pt", pa)
    old_pa = torch.load(tmp_path / "pa.pt", weights_only=True)
    old_pa["family"] = "ampnp"
    torch.save(old_pa, tmp_path / "pa.pt")
    assert type(npr.load_trained(tmp_path / "pa.pt")[0]) is npr.AMPNPPseudoAttention
    del blob["state_dict"]["enc.post.0.weight"]
    blob["resample"] = False
    torch.save(blob, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="does not match this version's network"):
        npr.load_trained(tmp_path / "bad.pt")


# ---- the language surface ------------------------------------------------------------

SRC = """
model P(xc: real[C, 1], yc: real[C, 1], xt: real[T, 1], yt: real[T, 1]?) {
  g = FAMILY(x_dim=1, y_dim=1, hidden=8, pseudo=3, heads=2)
  yt ~ g(xc, yc, xt)
}
infer np_train(steps=5, batch=4, tasks=rbf)
"""


@pytest.mark.parametrize("family,cls", [("cnp", "CNP"), ("np", "NP"), ("anp", "ANP"),
                                        ("martingale_np", "MPNP"),
                                        ("martingale_anp", "AMPNP")])
def test_family_switches_in_one_word(family, cls):
    m = ppl.compile(SRC.replace("FAMILY", family))
    assert f"rt.neural_process.{cls}" in m.source
    assert 'pyro.sample("yt", rt.event(g(xc, yc, xt), [T, 1]), obs=yt)' in m.source


def test_generator_spelling_reaches_the_network():
    """``generator=mixed`` in a model file builds a mixed-generator network (the network
    the fit trains and ``bdl predict`` rebuilds from the source); a misspelt word is a
    located error with a suggestion; from Python an unknown mode is a ValueError."""
    from ppl.infer.np_meta import neural_processes

    src = SRC.replace("FAMILY", "martingale_np").replace("heads=2)",
                                                         "heads=2, generator=mixed)")
    m = ppl.compile(src)
    assert "generator='mixed'" in m.source
    data = {"xc": [[-1.0], [0.0]], "yc": [[0.2], [0.4]], "xt": [[0.5]], "yt": [[0.3]]}
    fit = m.fit(data, steps=3, batch=2)
    assert len(fit.train_loss["g"]) == 3 and all(map(math.isfinite, fit.train_loss["g"]))
    assert neural_processes()["g"].gen.mode == "mixed"
    with pytest.raises(ppl.BdlError) as err:
        ppl.compile(src.replace("generator=mixed", "generator=mixd"))
    text = str(err.value)
    assert "must be one of mean, resample, predictive, mixed" in text and "'mixed'" in text
    with pytest.raises(ValueError, match="unknown pseudo-context generator 'mix'"):
        npr.CNP(1, 1, generator="mix")


def test_inputs_that_do_not_fit_x_dim_or_y_dim_are_argument_errors():
    """The predictive checks its inputs before any encoder sees them: each error names
    the input (for ppl.locate's caret), the expected and the actual shape."""
    from ppl.runtime.errors import ArgumentError

    net = npr.CNP(2, 1, hidden=8, heads=2)
    xc, yc, xt = torch.randn(10, 1), torch.randn(10, 1), torch.randn(4, 2)
    with pytest.raises(ArgumentError) as e:
        net(xc, yc, xt)
    assert e.value.argument == "xc"
    assert str(e.value) == ("input 'xc' of the neural process must be [points, 2] or "
                            "[tasks, points, 2] (x_dim=2), got shape [10, 1]")
    xc = torch.randn(10, 2)
    with pytest.raises(ArgumentError, match=r"'yc' .*\[points, 1\].*got shape \[10\]") as e:
        net(xc, yc[:, 0], xt)
    assert e.value.argument == "yc"
    with pytest.raises(ArgumentError, match=r"same tasks and points, got shapes \[10, 2\] "
                                            r"and \[9, 1\]") as e:
        net(xc, yc[:9], xt)
    assert e.value.argument == "yc"
    with pytest.raises(ArgumentError, match="context's tasks") as e:
        net(xc, yc, xt.expand(3, 4, 2))
    assert e.value.argument == "xt"
    # inputs that fit: one task, and a batch of 3 tasks
    assert net(xc, yc, xt).sample().shape == (4, 1)
    assert net(xc.expand(3, 10, 2), yc.expand(3, 10, 1), xt.expand(3, 4, 2)).sample().shape \
        == (3, 4, 1)


def test_network_sizes_are_one_integer_each():
    from ppl.runtime.errors import ArgumentError

    with pytest.raises(ArgumentError, match=r"hidden must be one integer \(the width of every "
                                            r"layer\), got 2 values") as e:
        npr.CNP(1, 1, hidden=torch.tensor([16, 8]))
    assert e.value.argument == "hidden"
    assert npr.CNP(1, 1, hidden=torch.tensor([16])).hidden == 16  # hidden=[16] in BDL
    with pytest.raises(ArgumentError, match="samples must be an integer of at least 1, "
                                            "got 2.5"):
        npr.NP(1, 1, hidden=8, samples=2.5)
    for cls in (npr.ANP, npr.MPNP, npr.AMPNP):
        with pytest.raises(ArgumentError, match="heads=4 must divide the attention width "
                                                "hidden=10") as e:
            cls(1, 1, hidden=10, heads=4)
        assert e.value.argument == "heads"


def test_run_time_input_errors_are_located_at_the_argument(tmp_path, bdl_here):
    """Where the checker cannot see an input's shape (a stacked batch of target sets), the
    predictive's ArgumentError is a located user error: exit status 1, caret at the
    input. A layer-size list for ``hidden`` is located at hidden."""
    import json

    model = tmp_path / "p.bdl"
    model.write_text(SRC.replace("FAMILY", "cnp").replace("g(xc, yc, xt)",
                                                          "g(xc, yc, stack([xt, xt]))"))
    data = {"xc": [[-1.0], [0.0]], "yc": [[0.2], [0.4]], "xt": [[0.5]], "yt": [[0.3]]}
    (tmp_path / "p.data.json").write_text(json.dumps(data))
    r = bdl_here("run", model, "--out", tmp_path / "run")
    assert r.returncode == 1, r.stderr
    assert (f"{model}:4:18: error: input 'xt' of the neural process must have the context's "
            "tasks, got shapes [2, 1] (xc) and [2, 1, 1] (xt)\n"
            "    yt ~ g(xc, yc, stack([xt, xt]))\n"
            "                   ^~~~~~~~~~~~~~~\n") in r.stderr
    m = ppl.compile(SRC.replace("FAMILY", "cnp").replace("hidden=8", "hidden=[16, 8]"), "p.bdl")
    with pytest.raises(ppl.BdlError) as e:
        m.fit(data, steps=1, batch=2)
    assert str(e.value).startswith("p.bdl:3:36: error: hidden must be one integer (the width "
                                   "of every layer), got 2 values")


@pytest.mark.parametrize("tasks,message", [
    ("sinc", "expected a kernel (rbf, matern52, periodic, tnoise), gp_tasks(...)"),
    ("gp_tasks(kernal=rbf)", "gp_tasks has no argument 'kernal' (did you mean 'kernel'?)"),
    ("gp_tasks(kernel=perodic)", "got 'perodic' (did you mean 'periodic'?)"),
    ("gp_tasks(lengthscale=[0.6, 0.1])", "range [0.6, 0.1] must have 0 < lo <= hi"),
    ("gp_tasks(scale=[0.1, 0.5, 1])", "scale must be a range [lo, hi] of two numbers"),
    ("gp_tasks(max_points=6)", "max_points must be at least 7"),
    ("gp_tasks(noise=-0.1)", "noise must be at least 0"),
    ("gp_tasks(rbf)", "gp_tasks takes keyword arguments only"),
    ("task_file()", 'task_file takes one path string: task_file("tasks.npz")'),
    ("taskfile(\"t.npz\")", "unknown task source taskfile(...)"),
    ("gp_tasks(kernel=rbf) + 1", "an option value must be"),
])
def test_bad_task_source_is_a_located_user_error(tasks, message):
    src = SRC.replace("FAMILY", "cnp").replace("tasks=rbf", f"\n    tasks={tasks}")
    with pytest.raises(ppl.BdlError) as e:
        ppl.compile(src, "p.bdl")
    text = str(e.value)
    assert message in text
    assert "p.bdl:7:" in text, text  # the line and column of the tasks option


def test_run_echoes_the_task_source_as_the_model_file_spells_it(tmp_path, bdl_here):
    """``bdl run`` prints the options line as BDL (it pastes back into --infer), the task
    source included: gp_tasks(kernel=rbf, ...), task_file("PATH"), not a Python dict."""
    import json

    from ppl.cli import _spell

    assert _spell({"call": "task_file", "args": ["my tasks.npz"], "kwargs": {},
                   "site": {"at": ["p.bdl", 7, 11]}}) == 'task_file("my tasks.npz")'
    model = tmp_path / "p.bdl"
    model.write_text(SRC.replace("FAMILY", "cnp").replace(
        "steps=5, batch=4, tasks=rbf",
        "steps=2, batch=2, tasks=gp_tasks(kernel=rbf, lengthscale=[0.1, 0.6])"))
    (tmp_path / "p.data.json").write_text(json.dumps(
        {"xc": [[-1.0], [0.0]], "yc": [[0.2], [0.4]], "xt": [[0.5]], "yt": [[0.3]]}))
    echo = ("P: np_train(steps=2, batch=2, lr=0.0005, tasks=gp_tasks(kernel=rbf, "
            "lengthscale=[0.1, 0.6]), train_samples=4, seed=0, device=cpu, dtype=float32)")
    r = bdl_here("run", model, "--out", tmp_path / "a")
    assert r.returncode == 0 and r.stderr.splitlines()[0] == echo, r.stderr
    again = bdl_here("run", model, "--out", tmp_path / "b", "--infer", echo.split(": ", 1)[1])
    assert again.returncode == 0 and again.stderr.splitlines()[0] == echo, again.stderr


def test_a_failed_network_definition_is_reported_once():
    """With y_dim left out, ``g = martingale_np(...)`` is the one error: the later call
    ``g(xc, yc)`` of the failed value adds no "cannot be called" error."""
    src = SRC.replace("FAMILY", "martingale_np").replace("y_dim=1, ", "")
    with pytest.raises(ppl.BdlError) as e:
        ppl.compile(src.replace("g(xc, yc, xt)", "g(xc, yc)"), "p.bdl")
    (d,) = e.value.diagnostics
    assert "y_dim" in d.message and (d.span.line, d.span.col) == (3, 7)


def test_gp_tasks_for_a_network_of_other_dimensions_is_a_user_error():
    """np_train's GP tasks are 1-D: a network with x_dim=2 needs a task file. The error is
    a BdlError (exit status 1 from bdl), naming the network and its dimensions."""
    m = ppl.compile(SRC.replace("FAMILY", "cnp").replace("x_dim=1", "x_dim=2")
                    .replace("xc: real[C, 1]", "xc: real[C, 2]")
                    .replace("xt: real[T, 1]", "xt: real[T, 2]"))
    data = {"xc": [[-1.0, 0.0], [0.0, 1.0]], "yc": [[0.2], [0.4]], "xt": [[0.5, 0.0]],
            "yt": [[0.3]]}
    with pytest.raises(ppl.BdlError) as e:
        m.fit(data, steps=1, batch=2)
    assert e.value.render() == (
        "infer: error: np_train: GP tasks are 1-D (x_dim=1, y_dim=1) but network 'g' has "
        "x_dim=2, y_dim=1\n"
        "  note: train it on tasks of its dimensions: tasks=task_file(\"PATH.npz\")")


def test_gp_tasks_spelling_reaches_the_sampler():
    """tasks=gp_tasks(...) through ppl.compile: the runner's task source has the given
    kernel and ranges, and its tasks obey them (per-task lengthscales in [0.2, 0.25])."""
    from ppl.infer import np_meta

    src = SRC.replace("FAMILY", "cnp").replace(
        "tasks=rbf", "tasks=gp_tasks(kernel=periodic, lengthscale=[0.2, 0.25], "
                     "period=[0.3, 0.4], noise=0.05, max_points=20)")
    m = ppl.compile(src)
    method, opts = m.resolve_infer()
    assert method == "np_train"
    tasks = np_meta.task_source(opts["tasks"], 1, 1)
    assert isinstance(tasks, npr.GPTasks) and tasks.kernel == "periodic"
    assert (tasks.lengthscale, tasks.period, tasks.noise, tasks.max_points) == (
        (0.2, 0.25), (0.3, 0.4), 0.05, 20)
    assert tasks.scale == (0.1, 1.0)  # unspecified: the METHODS default
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        assert tasks.sample(2, g).x.shape[1] <= 20
    _, hyper = tasks.sample_f(torch.zeros(300, 2, 1), g)
    assert 0.2 <= hyper["lengthscale"].min() and hyper["lengthscale"].max() <= 0.25
    assert 0.3 <= hyper["period"].min() and hyper["period"].max() <= 0.4
    # a bare kernel name is gp_tasks with that kernel and the default ranges
    plain = np_meta.task_source("tnoise", 1, 1)
    assert (plain.kernel, plain.lengthscale, plain.tnoise_scale) == ("tnoise", (0.1, 0.6), 0.15)
    # the option can be overridden like any other, in BDL syntax or from Python
    _, opts = m.resolve_infer("np_train(tasks=gp_tasks(kernel=matern52))")
    assert np_meta.task_source(opts["tasks"], 1, 1).kernel == "matern52"
    _, opts = m.resolve_infer(tasks=npr.GPTasks("rbf", lengthscale=(0.3, 0.3)))
    assert np_meta.task_source(opts["tasks"], 1, 1).lengthscale == (0.3, 0.3)


def test_np_train_with_gp_tasks_trains_end_to_end():
    src = SRC.replace("FAMILY", "martingale_np").replace(
        "tasks=rbf", "tasks=gp_tasks(kernel=matern52, lengthscale=[0.3, 0.5], max_points=30)")
    m = ppl.compile(src)
    data = {"xc": [[-1.0], [0.0]], "yc": [[0.2], [0.4]], "xt": [[0.5]], "yt": [[0.3]]}
    fit = m.fit(data, steps=5, batch=4)
    assert len(fit.train_loss["g"]) == 5 and all(math.isfinite(v) for v in fit.train_loss["g"])
    from ppl.infer.methods import without_site

    # the compile site (where tasks= was written, for a located error) is kept beside it
    assert without_site(fit.options)["tasks"] == {"call": "gp_tasks", "args": [], "kwargs": {
        "kernel": "matern52", "lengthscale": [0.3, 0.5], "max_points": 30}}


def test_np_train_fit_and_params_reload():
    """np_train trains the model's network; its weights (Fit.params) reloaded into a fresh
    param store give the same predictive (what ``bdl predict`` does)."""
    import pyro

    from ppl.runtime import reset_networks

    m = ppl.compile(SRC.replace("FAMILY", "cnp"))
    data = {"xc": [[-1.0], [0.0], [1.0]], "yc": [[0.2], [0.4], [0.1]], "xt": [[0.5], [1.5]],
            "yt": [[0.3], [0.0]]}
    fit = m.fit(data, steps=30, batch=8, seed=0)
    assert fit.chains["yt"].shape == (1, 1000, 2, 1)
    assert len(fit.train_loss["g"]) == 30
    assert set(fit.np_eval["g"]) == {"ctx_ll", "tgt_ll"}
    trained = {k: v.clone() for k, v in fit.params.items()}
    kwargs = m.bind(data)
    tr = pyro.poutine.trace(m.pyro_model).get_trace(**kwargs)
    want = tr.nodes["yt"]["fn"].log_prob(kwargs["yt"])
    pyro.clear_param_store()
    reset_networks()
    for k, v in trained.items():
        pyro.get_param_store()[k] = v
    tr2 = pyro.poutine.trace(m.pyro_model).get_trace(**kwargs)
    torch.testing.assert_close(tr2.nodes["yt"]["fn"].log_prob(kwargs["yt"]).double(),
                               want.double())
    # a fresh network (no loaded weights) predicts differently
    pyro.clear_param_store()
    reset_networks()
    tr3 = pyro.poutine.trace(m.pyro_model).get_trace(**kwargs)
    assert not torch.allclose(tr3.nodes["yt"]["fn"].log_prob(kwargs["yt"]).double(), want.double())


def test_example_runs_end_to_end():
    """examples/np_gp.bdl as written (martingale_np, hidden 64), 100 training steps; the
    targets are given here so that the run stays short (left out, model.fit draws 1000
    posterior-predictive runs of the network)."""
    import json

    m = ppl.load(EXAMPLE)
    data = json.loads(EXAMPLE.with_suffix(".data.json").read_text())
    data["yt"] = [[0.0]] * len(data["xt"])
    fit = m.fit(data, steps=100, seed=0)
    assert fit.method == "np_train" and fit.options["batch"] == 16
    losses = fit.train_loss["g"]
    assert len(losses) == 100 and sum(losses[-20:]) < sum(losses[:20])
    assert fit.chains["yt"].shape == (1, 1000, 20, 1)
    assert torch.isfinite(fit.chains["yt"]).all()
    assert -3 < fit.np_eval["g"]["tgt_ll"] < 1.5


def test_np_train_from_task_file(tmp_path):
    """tasks=task_file("PATH") trains on the file's tasks; a missing file, or one whose
    dimensions are not the network's, is an error naming the file."""
    b = npr.GPTasks("matern52").sample(8, torch.Generator().manual_seed(0))
    npr.save_tasks(tmp_path / "tasks.npz", b)
    path = tmp_path / "tasks.npz"
    src = SRC.replace("FAMILY", "np").replace("tasks=rbf", f'tasks=task_file("{path}")')
    m = ppl.compile(src)
    data = {"xc": [[-1.0], [0.0]], "yc": [[0.2], [0.4]], "xt": [[0.5]], "yt": [[0.3]]}
    fit = m.fit(data, steps=5, batch=4)
    assert len(fit.train_loss["g"]) == 5
    assert fit.options["tasks"] == {"call": "task_file", "args": [str(path)], "kwargs": {},
                                    "site": {"at": ["<string>", 6, 34]}}
    with pytest.raises(ppl.BdlError, match="<string>:6:34: error: np_train: task_file: no file"):
        ppl.compile(SRC.replace("FAMILY", "np").replace(
            "tasks=rbf", f'tasks=task_file(path="{tmp_path / "nope.npz"}")')).fit(data, steps=5)
    wide = npr.Batch(torch.zeros(2, 3, 2), torch.zeros(2, 3, 1), torch.zeros(2, 5, 2),
                     torch.zeros(2, 5, 1))
    npr.save_tasks(tmp_path / "wide.npz", wide)
    with pytest.raises(ppl.BdlError, match="wide.npz has x_dim, y_dim = \\(2, 1\\)"):
        ppl.compile(SRC.replace("FAMILY", "np").replace(
            "tasks=rbf", f'tasks=task_file("{tmp_path / "wide.npz"}")')).fit(data, steps=5)


def test_task_file_is_relative_to_the_model_file(tmp_path, monkeypatch):
    """task_file("tasks.npz") in a model file names the file next to the model, from any
    working directory; missing, it is an error at the option's line and column when the
    fit starts (bdl check and bdl predict do not need the file); a path given with
    --infer or from Python stays relative to the working directory."""
    from ppl.infer import np_meta

    folder, elsewhere = tmp_path / "models", tmp_path / "elsewhere"
    folder.mkdir()
    elsewhere.mkdir()
    b = npr.GPTasks("rbf").sample(6, torch.Generator().manual_seed(0))
    npr.save_tasks(folder / "tasks.npz", b)
    model_file = folder / "p.bdl"
    model_file.write_text(SRC.replace("FAMILY", "cnp").replace(
        "tasks=rbf", 'tasks=task_file("tasks.npz")'))
    monkeypatch.chdir(elsewhere)
    m = ppl.load(model_file)
    data = {"xc": [[-1.0], [0.0]], "yc": [[0.2], [0.4]], "xt": [[0.5]], "yt": [[0.3]]}
    fit = m.fit(data, steps=3, batch=2)
    assert len(fit.train_loss["g"]) == 3
    assert fit.options["tasks"]["site"]["file"] == str(folder.resolve() / "tasks.npz")
    # the generated module and `bdl info` keep the path as written: they do not depend on
    # the folder the model was compiled in
    infer_src = m.source[m.source.index("_INFER = "):m.source.index("def ")]
    assert "'args': ['tasks.npz']" in infer_src
    assert "site" not in infer_src and str(tmp_path) not in infer_src
    from ppl.info import model_info
    assert "site" not in model_info(m.checked)["infer"]["tasks"]
    # the source's tasks are the file's: every drawn context is one of the 6 saved ones
    src = np_meta.task_source(fit.options["tasks"], 1, 1)
    drawn = src.sample(20, torch.Generator().manual_seed(1)).xc
    assert all(any(torch.equal(d, s) for s in b.xc) for d in drawn)
    # a file of that name in the working directory is not a fallback
    (folder / "tasks.npz").rename(elsewhere / "tasks.npz")
    with pytest.raises(ppl.BdlError) as e:
        ppl.load(model_file).fit(data, steps=3, batch=2)
    text = str(e.value)
    assert f"{model_file}:6:34: error: np_train: task_file: no file 'tasks.npz'" in text
    assert str(folder.resolve() / "tasks.npz") in text and "model file's folder" in text
    assert 'tasks=task_file("tasks.npz")' in text and "^" in text  # the line and a caret
    # the same path from the command line is relative to the working directory
    _, opts = m.resolve_infer('np_train(tasks=task_file("tasks.npz"))')
    assert "site" not in opts["tasks"]
    assert np_meta.task_source(opts["tasks"], 1, 1).num_tasks == 6
    with pytest.raises(ppl.BdlError, match="no file 'gone.npz' .*relative to the current"):
        np_meta.task_source({"call": "task_file", "args": ["gone.npz"], "kwargs": {}}, 1, 1)


def test_bdl_run_then_predict_on_new_context(tmp_path, bdl_here):
    """``bdl run`` saves the trained weights (params.pt); ``bdl predict`` conditions the
    trained CNP on a new context: its draws match the reloaded network's predictive."""
    import json

    import numpy as np
    import pyro

    from ppl.runtime import reset_networks

    model = tmp_path / "p.bdl"
    model.write_text(SRC.replace("FAMILY", "cnp").replace("steps=5", "steps=20"))
    (tmp_path / "p.data.json").write_text(json.dumps(
        {"xc": [[-1.0], [0.0]], "yc": [[0.2], [0.4]], "xt": [[0.5]], "yt": [[0.3]]}))
    new = {"xc": [[-1.5], [0.3], [1.0]], "yc": [[0.9], [-0.2], [0.4]], "xt": [[0.0], [2.0]]}
    (tmp_path / "new.json").write_text(json.dumps(new))
    r = bdl_here("run", model, "--out", tmp_path / "run")
    assert r.returncode == 0, r.stderr
    # predict starts from what the files hold, as in a new process
    pyro.clear_param_store()
    reset_networks()
    r = bdl_here("predict", model, "--posterior", tmp_path / "run", "--data",
                 tmp_path / "new.json", "--out", tmp_path / "pred")
    assert r.returncode == 0, r.stderr
    draws = torch.as_tensor(np.load(tmp_path / "pred" / "predictive.npz")["yt"])
    assert draws.shape == (1000, 2, 1)
    params = torch.load(tmp_path / "run" / "params.pt", weights_only=True)
    net = npr.CNP(1, 1, hidden=8, heads=2)
    net.load_state_dict({k.split("$$$")[1]: v for k, v in params.items()})
    mu, sigma = net.predict(*(torch.tensor(new[k]) for k in ("xc", "yc", "xt")))
    se = sigma[0].detach() / math.sqrt(1000)
    assert ((draws.mean(0) - mu[0].detach()).abs() < 4 * se).all()
    sd = draws.std(0)
    assert ((sd - sigma[0].detach()).abs() < 4 * sigma[0].detach() / math.sqrt(2 * 999)).all()


# ---- the benchmark script (benchmarks/np_gp.py) ---------------------------------------

def _np_gp():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "np_gp.py"
    spec = importlib.util.spec_from_file_location("np_gp_bench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_benchmark_mixture_moments_exact():
    """Mean and sd of an equal-weight mixture of N(0, 1) and N(2, 0.5^2): mean 1,
    variance (1 + 0.25)/2 + (0 + 4)/2 - 1 = 1.625."""
    bench = _np_gp()

    class Fixed:
        def predict(self, xc, yc, xt, samples):
            mu = torch.tensor([0.0, 2.0]).reshape(2, 1, 1, 1).expand(2, 1, 3, 1)
            sd = torch.tensor([1.0, 0.5]).reshape(2, 1, 1, 1).expand(2, 1, 3, 1)
            return mu, sd

        width_weights = None

        def predict_mixture(self, xc, yc, xt, samples):
            return (*self.predict(xc, yc, xt, samples), self.width_weights)

    m, sd = bench.mixture_moments(Fixed(), None, None, None, 2)
    torch.testing.assert_close(m, torch.ones(1, 3, 1))
    torch.testing.assert_close(sd, torch.full((1, 3, 1), math.sqrt(1.625)))
    # weights 1/4, 3/4 (the width ladder's weighted mixture): mean 1.5, variance
    # (1 + 0)/4 + 3 (0.25 + 4)/4 - 1.5^2 = 1.1875
    weighted = Fixed()
    weighted.width_weights = torch.tensor([[0.25], [0.75]]).log()
    m, sd = bench.mixture_moments(weighted, None, None, None, 2)
    torch.testing.assert_close(m, torch.full((1, 3, 1), 1.5))
    torch.testing.assert_close(sd, torch.full((1, 3, 1), math.sqrt(1.1875)))


def test_benchmark_smoke_json_and_plots(tmp_path):
    """A tiny run of the benchmark: JSON rows MODEL/KERNEL with the issue's columns, one
    PNG per evaluation kernel, and --device cuda refused cleanly without CUDA."""
    import json

    bench = _np_gp()
    out = tmp_path / "r.json"
    rc = bench.main(["--models", "cnp,anp,mpnp,ampnp", "--eval-kernels", "rbf,tnoise",
                     "--steps", "3",
                     "--hidden", "8", "--eval-tasks", "10", "--samples", "4",
                     "--lengthscale-range", "0.2,0.4", "--generator", "resample",
                     "--json", str(out),
                     "--plots", str(tmp_path / "figs")])
    assert rc == 0
    rows = json.loads(out.read_text())
    for model in ("cnp", "anp", "mpnp", "ampnp"):
        for k in ("rbf", "tnoise"):
            assert {"ctx_ll", "tgt_ll", "tgt_ll_se"} <= set(rows[f"{model}/{k}"])
            assert all(math.isfinite(v) for v in rows[f"{model}/{k}"].values())
    # paired differences on the same tasks (every model against the CNP, AMPNP against
    # the ANP): the mean difference is the difference of the means
    for k in ("rbf", "tnoise"):
        for model, b in (("mpnp", "cnp"), ("ampnp", "cnp"), ("ampnp", "anp")):
            r, base = rows[f"{model}/{k}"], rows[f"{b}/{k}"]
            assert r[f"tgt_vs_{b}"] == pytest.approx(r["tgt_ll"] - base["tgt_ll"], abs=1e-9)
            assert r[f"ctx_vs_{b}"] == pytest.approx(r["ctx_ll"] - base["ctx_ll"], abs=1e-9)
            assert r[f"tgt_vs_{b}_se"] > 0 and f"tgt_vs_{b}" not in base
        assert "tgt_vs_np" not in rows[f"mpnp/{k}"]  # np did not run
        assert "tgt_vs_anp" not in rows[f"mpnp/{k}"]  # not mpnp's peer
    for k in ("rbf", "tnoise"):
        png = tmp_path / "figs" / f"np_{k}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            bench.main(["--device", "cuda", "--steps", "1"])


def test_benchmark_save_every_checkpoints_at_equal_steps(tmp_path):
    """--save-every N saves MODEL_sSTEP.pt at every multiple of N below --steps (the
    final weights stay MODEL.pt); the step-4 checkpoint holds the weights that the
    same training (seed, schedule over 5 steps) has after its fourth step."""
    import copy

    bench = _np_gp()
    assert bench.main(["--models", "cnp", "--eval-kernels", "rbf", "--hidden", "8",
                       "--eval-tasks", "2", "--samples", "2", "--lr", "1e-2", "--seed",
                       "3", "--steps", "5", "--save", str(tmp_path), "--save-every",
                       "2"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnp.pt", "cnp_s2.pt",
                                                          "cnp_s4.pt"]
    ckpt, _ = npr.load_trained(tmp_path / "cnp_s4.pt")
    torch.manual_seed(3)
    model = npr.MODELS["cnp"](1, 1, hidden=8, pseudo=0, samples=2)
    seen = {}
    npr.train(model, npr.GPTasks("rbf"), 5, 16, lr=1e-2, num_samples=4,
              gen=torch.Generator().manual_seed(3),
              callback=lambda step, loss: step == 3 and seen.update(
                  copy.deepcopy(model.state_dict())))
    got = ckpt.state_dict()
    assert set(got) == set(seen)
    for k in seen:
        torch.testing.assert_close(got[k], seen[k], rtol=0, atol=0)
    final, _ = npr.load_trained(tmp_path / "cnp.pt")
    assert any(not torch.equal(got[k], v) for k, v in final.state_dict().items())


def test_mpnp_pseudo_size_follows_context_by_default():
    """pseudo=0 (the default): each pseudo set has as many points as the context, so
    theta_k pools C real and C generated representations; pseudo=M fixes M."""
    xc, yc, xt, _ = _batch(B=2, C=6)
    for pseudo, want in ((0, 6), (4, 4)):
        torch.manual_seed(0)
        m = npr.MPNP(1, 1, hidden=16, pseudo=pseudo, samples=3, heads=2)
        seen: list = []
        forward = m.gen.forward
        m.gen.forward = lambda rc, eps, base=None, f=forward, s=seen: (
            s.append(eps.shape) or f(rc, eps, base))
        m.predict(xc, yc, xt)
        assert seen == [torch.Size([3, 2, want, 16])]


def test_benchmark_expected_improvement_closed_form():
    """EI below best of a Gaussian at mu = best is sigma / sqrt(2 pi); of a two-component
    mixture it equals int max(0, best - y) p(y) dy (trapezoid on a fine grid), which
    moment matching would miss (the mixture below is bimodal)."""
    bench = _np_gp()
    dt = torch.float64
    ei = bench.expected_improvement(torch.tensor([[0.3]], dtype=dt),
                                    torch.tensor([[2.0]], dtype=dt), 0.3)
    torch.testing.assert_close(ei, torch.tensor([2.0 / math.sqrt(2 * math.pi)], dtype=dt))
    mu = torch.tensor([[-1.0, 0.5], [2.0, 0.0]], dtype=dt)      # [S=2, 2 points]
    sd = torch.tensor([[0.5, 1.0], [1.5, 0.2]], dtype=dt)
    best = 0.25
    y = torch.linspace(-15, 15, 300001, dtype=dt)[:, None]
    dens = torch.distributions.Normal(mu[:, None], sd[:, None]).log_prob(y).exp().mean(0)
    want = torch.trapezoid((best - y).clamp_min(0) * dens, y, dim=0)
    got = bench.expected_improvement(mu, sd, best)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-9)
    # the moment-matched Gaussian gives a different EI for the first point (bimodal)
    m = mu.mean(0)
    v = (sd ** 2 + mu ** 2).mean(0) - m ** 2
    mm = bench.expected_improvement(m[None], v.sqrt()[None], best)
    assert abs(float(mm[0] - got[0])) > 1e-2


def test_benchmark_gp_reference_is_the_bayes_predictive():
    """gp_reference with a 2-point grid per hyperparameter equals the posterior-weighted
    mixture of GP predictives computed directly (MultivariateNormal marginal likelihood,
    explicit inverse), point by point."""
    import argparse

    bench = _np_gp()
    args = argparse.Namespace(lengthscale_range=(0.2, 0.6), scale_range=(0.5, 1.0),
                              period_range=(0.1, 0.5), noise=0.1)
    g = torch.Generator().manual_seed(3)
    x = -2 + 4 * torch.rand(1, 9, 1, generator=g)
    y = torch.sin(3 * x) + 0.1 * torch.randn(1, 9, 1, generator=g)
    x, y = x.expand(2, -1, -1), y.expand(2, -1, -1)         # two copies of one task
    batch = npr.Batch(x[:, :4], y[:, :4], x, y)
    row, (ctx, tgt) = bench.gp_reference([batch], "rbf", args, grid=2)
    xd, yd = x[0, :, 0].double(), y[0, :, 0].double()
    n2 = 0.1 ** 2 + 1e-5
    log_w, lls = [], []
    for ls in (0.3, 0.5):
        for s in (0.625, 0.875):
            k = s ** 2 * torch.exp(-0.5 * ((xd[:, None] - xd[None]) / ls) ** 2)
            kcc = k[:4, :4] + n2 * torch.eye(4, dtype=torch.float64)
            log_w.append(torch.distributions.MultivariateNormal(
                torch.zeros(4, dtype=torch.float64), kcc).log_prob(yd[:4]))
            inv = torch.linalg.inv(kcc)
            m = k[:, :4] @ inv @ yd[:4]
            v = k.diagonal() - ((k[:, :4] @ inv) * k[:, :4]).sum(-1) + n2
            lls.append(torch.distributions.Normal(m, v.sqrt()).log_prob(yd))
    w = torch.log_softmax(torch.stack(log_w), 0)
    ll = torch.logsumexp(w[:, None] + torch.stack(lls), 0)
    torch.testing.assert_close(ctx, ll[:4].mean().expand(2))
    torch.testing.assert_close(tgt, ll[4:].mean().expand(2))
    assert row["tgt_ll"] == pytest.approx(float(ll[4:].mean()))


def test_benchmark_reference_rows_bo_table_and_saved_models(tmp_path, capsys):
    """--reference adds bayes/bayes_noise rows paired with the CNP; the spread columns
    are 0 for the CNP and positive for an MPNP; --save keeps each trained model with its
    generator mode; the BO regrets are printed as a table of their own."""
    import json

    bench = _np_gp()
    out = tmp_path / "r.json"
    rc = bench.main(["--models", "cnp,mpnp", "--eval-kernels", "rbf,periodic",
                     "--steps", "3", "--hidden", "8", "--eval-tasks", "10",
                     "--samples", "4", "--generator", "predictive", "--reference",
                     "--bo-tasks", "2", "--bo-iters", "2", "--save", str(tmp_path / "m"),
                     "--json", str(out)])
    assert rc == 0
    rows = json.loads(out.read_text())
    for k in ("rbf", "periodic"):
        for ref in ("bayes", "bayes_noise"):
            r, base = rows[f"{ref}/{k}"], rows[f"cnp/{k}"]
            assert r["tgt_vs_cnp"] == pytest.approx(r["tgt_ll"] - base["tgt_ll"], abs=1e-9)
        assert rows[f"cnp/{k}"]["mean_spread"] == 0.0
        assert rows[f"mpnp/{k}"]["mean_spread"] > 0.0
    # the Bayes predictive of the training prior is far better in distribution than
    # any 3-step network, and its noise-inferring version is the better one on periodic
    assert rows["bayes/rbf"]["tgt_ll"] > rows["cnp/rbf"]["tgt_ll"] + 1.0
    assert rows["bayes_noise/periodic"]["tgt_ll"] > rows["bayes/periodic"]["tgt_ll"]
    model, _ = npr.load_trained(tmp_path / "m" / "mpnp.pt")
    assert model.gen.predictive and (tmp_path / "m" / "cnp.pt").exists()
    printed = capsys.readouterr().out
    assert "BO regret" in printed and f"{rows['mpnp/bo']['regret']:19.4f}" in printed


def test_benchmark_load_reproduces_rows_and_pairs_across_runs(tmp_path, capsys):
    """--load evaluates saved models on the same tasks as the run that trained them
    (every row reproduced exactly: the seeds are reset per model and kernel), and
    --paired-against pairs them task by task: a model trained in another run (a second
    MPNP with another generator) gets the same paired differences to the loaded CNP as
    the difference of per-task scores, i.e. mean difference = difference of means, with
    the paired s.e. smaller than the unpaired one when the scores are correlated."""
    import json

    bench = _np_gp()
    flags = ["--eval-kernels", "rbf,periodic", "--steps", "3", "--hidden", "8",
             "--eval-tasks", "10", "--samples", "4"]
    first = tmp_path / "a.json"
    assert bench.main(["--models", "cnp,np,mpnp", *flags, "--save", str(tmp_path / "a"),
                       "--json", str(first)]) == 0
    a = json.loads(first.read_text())
    second = tmp_path / "b.json"
    loads = ",".join(f"{m}={tmp_path / 'a' / (m + '.pt')}" for m in ("cnp", "np")) \
        + f",mean={tmp_path / 'a' / 'mpnp.pt'}"
    assert bench.main(["--models", "mpnp", "--generator", "predictive", *flags,
                       "--load", loads, "--paired-against", "mean,np",
                       "--json", str(second)]) == 0
    b = json.loads(second.read_text())
    assert "cnp/train" not in b and "mpnp/train" in b
    for k in ("rbf", "periodic"):
        for label, name in (("cnp", "cnp"), ("np", "np"), ("mean", "mpnp")):
            for col in ("ctx_ll", "ctx_ll_se", "tgt_ll", "tgt_ll_se", "mean_spread"):
                assert b[f"{label}/{k}"][col] == a[f"{name}/{k}"][col]
        # the loaded CNP is the usual base; the loaded default MPNP is a base on request
        r = b[f"mpnp/{k}"]
        for base in ("cnp", "np", "mean"):
            assert r[f"tgt_vs_{base}"] == pytest.approx(
                r["tgt_ll"] - b[f"{base}/{k}"]["tgt_ll"], abs=1e-9)
            assert r[f"ctx_vs_{base}"] == pytest.approx(
                r["ctx_ll"] - b[f"{base}/{k}"]["ctx_ll"], abs=1e-9)
            # the scores of two models on the same tasks are correlated (hard tasks are
            # hard for both), so the paired s.e. is below the unpaired one
            unpaired = math.hypot(r["tgt_ll_se"], b[f"{base}/{k}"]["tgt_ll_se"])
            assert 0 < r[f"tgt_vs_{base}_se"] < unpaired
        assert b[f"cnp/{k}"]["tgt_vs_mean"] == pytest.approx(
            a[f"cnp/{k}"]["tgt_ll"] - a[f"mpnp/{k}"]["tgt_ll"], abs=1e-9)
        assert "tgt_vs_mean" not in b[f"mean/{k}"]
        assert b[f"mean/{k}"]["tgt_vs_cnp"] == pytest.approx(a[f"mpnp/{k}"]["tgt_vs_cnp"])
    assert "tgt - mean (paired)" in capsys.readouterr().out
    for bad in (["--load", f"mpnp={tmp_path / 'a' / 'cnp.pt'}"],      # clashes with a model
                ["--load", "cnp"],                                     # no path
                ["--load", f"x={tmp_path / 'missing.pt'}"],
                ["--paired-against", "anp"]):                          # not in the run
        with pytest.raises(SystemExit):
            bench.main(["--models", "mpnp", *flags, *bad])


def test_benchmark_ladder_on_a_family_without_loo_fails_before_training(monkeypatch,
                                                                          capsys):
    """--ladder-on np (no leave-one-out amortised predictive) is a parser error (exit 2)
    raised before any model trains: npr.train is made to fail if called, and the
    message names the model."""
    bench = _np_gp()

    def no_training(*a, **k):
        raise AssertionError("trained before refusing --ladder-on")

    monkeypatch.setattr(bench.npr, "train", no_training)
    for models in ("np", "cnp,np", "cnp,ampnp"):
        bad = models.split(",")[-1]
        with pytest.raises(SystemExit) as err:
            bench.main(["--models", models, "--ladder-on", bad, "--steps", "3",
                        "--hidden", "8", "--eval-tasks", "2"])
        assert err.value.code == 2
        assert f"--ladder-on {bad}: " in capsys.readouterr().err


def test_benchmark_width_ladder_rows(tmp_path):
    """--ladder-on evaluates a model (here a saved MPNP loaded twice) with the width
    ladder: with the one-width ladder its rows are the plain model's; with the default
    ladder they differ, and --paired-against pairs the two on the same tasks; a family
    without the mean-pooled amortised path is refused."""
    import json

    bench = _np_gp()
    flags = ["--eval-kernels", "rbf,periodic", "--steps", "3", "--hidden", "8",
             "--eval-tasks", "10", "--samples", "4"]
    assert bench.main(["--models", "np,mpnp", *flags, "--save", str(tmp_path / "a")]) == 0
    path = tmp_path / "a" / "mpnp.pt"
    rows = {}
    for widths in ("1", "1,2,4"):
        out = tmp_path / f"{widths}.json"
        assert bench.main(["--models", "cnp", *flags, "--load", f"plain={path},lad={path}",
                           "--ladder-on", "lad", "--width-ladder", widths,
                           "--paired-against", "plain", "--json", str(out)]) == 0
        rows[widths] = json.loads(out.read_text())
    for k in ("rbf", "periodic"):
        one, lad = rows["1"], rows["1,2,4"]
        for col in ("ctx_ll", "tgt_ll", "tgt_ll_se", "mean_spread", "sigma"):
            # the same mixture; the weighted log-sum-exp rounds differently in float32
            assert one[f"lad/{k}"][col] == pytest.approx(one[f"plain/{k}"][col], abs=1e-6)
        assert lad[f"plain/{k}"]["tgt_ll"] == one[f"plain/{k}"]["tgt_ll"]
        assert lad[f"lad/{k}"]["tgt_ll"] != lad[f"plain/{k}"]["tgt_ll"]
        assert lad[f"lad/{k}"]["sigma"] > lad[f"plain/{k}"]["sigma"]
        assert lad[f"lad/{k}"]["tgt_vs_plain"] == pytest.approx(
            lad[f"lad/{k}"]["tgt_ll"] - lad[f"plain/{k}"]["tgt_ll"], abs=1e-9)
    for bad in (["--load", f"n={tmp_path / 'a' / 'np.pt'}", "--ladder-on", "n"],
                ["--ladder-on", "anp"], ["--width-ladder", "1,-2"]):
        with pytest.raises(SystemExit):
            bench.main(["--models", "cnp", *flags, *bad])


@pytest.mark.parametrize("method", ["svi(steps=3)", "nuts(samples=5, warmup=5)", "map()"])
def test_other_methods_are_refused_at_check(tmp_path, capsys, method):
    """Under svi or nuts the network stayed untrained ("final ELBO: -0"): a neural
    process is fitted by np_train only, refused at `bdl check` like monotone_dbm's nuts."""
    from ppl.cli import main

    f = tmp_path / "p.bdl"
    f.write_text(SRC.replace("FAMILY", "martingale_np").replace(
        "np_train(steps=5, batch=4, tasks=rbf)", method))
    assert main(["check", str(f)]) == 1
    err = capsys.readouterr().err
    name = method.split("(")[0]
    assert (f"p.bdl:3:7: error: martingale_np cannot be fitted by '{name}'\n" in err), err
    assert "note: martingale_np works with: np_train (infer np_train(...))" in err
    with pytest.raises(ppl.BdlError, match=f"cannot be fitted by '{name}'"):
        ppl.compile(SRC.replace("FAMILY", "cnp")).fit({}, infer=name)


@pytest.mark.parametrize("arrays, message", [
    ({"xc": 1, "yc": 1, "xt": 1}, "tasks.npz: task file lacks arrays yt (expected xc, yc, "
     "xt, yt, each [tasks, points, dim]; it has xc, yc, xt)"),
    ("pickled", "tasks.npz: not a task file (an .npz of numeric arrays xc, yc, xt, yt): it "
     "holds pickled Python objects"),
    ("objects", "tasks.npz: task file arrays must be numeric: they hold pickled Python "
     "objects"),
])
def test_a_task_file_that_is_not_one_is_a_located_user_error(tmp_path, capsys, arrays,
                                                             message):
    """A task file without yt, or with pickled objects, was an internal error (exit 3)."""
    import json

    import numpy as np

    from ppl.cli import main

    if arrays == "pickled":
        import pickle

        (tmp_path / "tasks.npz").write_bytes(pickle.dumps({"xc": [1.0]}))
    elif arrays == "objects":
        np.savez(tmp_path / "tasks.npz", **{k: np.array([{"a": 1}], dtype=object)
                                            for k in ("xc", "yc", "xt", "yt")})
    else:
        np.savez(tmp_path / "tasks.npz", **{k: np.zeros((2, 3, 1)) for k in arrays})
    f = tmp_path / "p.bdl"
    f.write_text(SRC.replace("FAMILY", "cnp").replace("tasks=rbf", 'tasks=task_file("tasks.npz")'))
    (tmp_path / "p.data.json").write_text(json.dumps(
        {"xc": [[0.0], [1.0]], "yc": [[0.0], [1.0]], "xt": [[0.5]], "yt": [[0.3]]}))
    assert main(["run", str(f), "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert f"p.bdl:6:34: error: np_train: {tmp_path / message}" in err, err
    with pytest.raises(npr.TaskFileError, match="tasks.npz: "):
        npr.FileTasks(tmp_path / "tasks.npz")
