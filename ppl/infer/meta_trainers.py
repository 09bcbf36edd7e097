"""Meta-learners over a flat weight vector theta (METHODS.md §4): NIW hierarchical
Bayes with the one-time episodic update (Kim & Hospedales, ICLR 2024), and the baselines
MAML (Finn et al. 2017; first or second order) and Plain (one shared theta; with the
prototype likelihood, ProtoNet) in the same harness; their Adam, the guard that skips a
non-finite step, and the meta-batch helpers (episodes stacked as rows of one evaluation).
Trainers hold the global parameters and give ``episode_loss(task, ep)`` (what
meta-training minimises), ``step(task, batch)`` and ``draws(task, ep)`` (test-time
adaptation on the support set, then draws); the tasks are in :mod:`ppl.infer.meta_tasks`.

NIW per episode (all closed form, METHODS.md §4): SGLD on the support loss, warm-started
at m0, gives (mbar_i, A_i) as constants (iterate mean and variance, or, with
``sgld_precision="newton"``, the Fisher diagonal and the Newton centre at the chain
mean; with ``"gauss_newton"``, the low-rank Fisher U^T U and that centre in the dense
closed form); q_i* = N(m_i*, 1/gamma_i*) with gamma_i* = A_i + n0 gamma0,
m_i* = (A_i mbar_i + n0 gamma0 m0)/gamma_i*; the episode loss is f_i + g_i with
f_i = -log p(query | theta), theta ~ q_i* (reparameterised) and g_i the expected KL; plus
KL(q(phi) || p(phi)) / N over the objective. Gradients reach (m0, gamma0, n0, l0) through
the closed forms only, so memory is flat in the SGLD steps.

MAML: ``inner_steps`` gradient steps of size ``inner_lr`` on the support NLL from theta,
then the query NLL (second order differentiates through the inner steps).
"""

from __future__ import annotations

import math

import torch

# one list each for the checker and the learner
from ..constructs.niw_meta import QUERY_MIXES
from ..runtime import niw_meta as rtn
from .meta_fisher import (
    _factor_and_grad,
    _fisher_floor,
    factor_and_grad_rows,
    gram_top_eigenvalue,
    gram_top_eigenvalues,
)


class NIW:
    """Global variational NIW q(phi) = prod_j NIW(m0_j, l0, gamma0_j, n0) (diagonal).

    ``variant``: "niw" learns everything; "no_adapt" freezes gamma0 at its initial value
    (1e6: theta_i ~= m0, no episode adaptation); "no_share" freezes n0 gamma0 near 0
    (1e-8: q_i* = N(mbar_i, 1/A_i), the episodes share nothing but the SGLD start).
    Hyperprior p(phi) = NIW(0, prior_l, prior_gamma, prior_n) per coordinate.

    SGLD chain: iterates t >= ``sgld_burn`` averaged (0.5: the second half of the chain;
    the first half is drift from the warm start, not posterior spread). Test time:
    predictions averaged over ``test_samples`` (20) draws of q_i*; 2 draws left a Monte
    Carlo variance in the predictive mean that raised the query MSE (benchmarks/RESULTS.md,
    Issue 7).

    ``sgld_precision`` -- how the chain becomes the quadratic
    (theta - mbar_i)^T A_i (theta - mbar_i)/2 of the support NLL U (METHODS.md §4):
    "auto" (the language's and fewshot.py's default): resolved at the first episode by
    :func:`auto_precision` from ``task.family`` -- "gauss_newton" for a Gaussian
    likelihood, "variance" otherwise (:meth:`resolve`);
    "variance" (this class's default, METHODS' estimator): mbar_i the mean of the kept iterates,
    A_i = tau/their variance clipped to [1e-4, a_max]; "fisher": mbar_i that mean, A_i the
    Fisher diagonal of U at it (of ``task.fisher_factor``: the Gauss-Newton diagonal for a
    Gaussian likelihood, the exact Hessian diagonal of a ReLU MLP's summed squared error),
    floored at 1e-4 and not clipped; "newton": that A_i, and the centre of the Taylor
    expansion of U at the chain mean thetabar, mbar_i = thetabar - grad U(thetabar)/A_i
    (the gradient from the factor's Jacobian when the task has ``fisher_factor_grad``,
    else one more backward pass), so that m_i* = m0 + (A_i (thetabar - m0) - grad U(thetabar)) /
    (A_i + n0 gamma0): a chain that has not reached its mode still tells where the mode
    is, and the per-weight move is damped by the curvature instead of discarded by a
    noisy variance; "gauss_newton": the same centre with the whole low-rank Fisher
    A_i = U^T U (U = ``task.fisher_factor`` at thetabar, r rows) in METHODS' dense closed
    form, by Woodbury in O(d r^2) (:func:`ppl.runtime.niw_meta.lowrank_posterior_kl`):
    the diagonal overstates each weight's information, this does not (sine/line:
    benchmarks/RESULTS.md, Issue 7, fourth slice).

    ``sgld_temp`` tau: Langevin at tau is stationary at N(mode, tau/h) on a quadratic of
    curvature h, so *at stationarity* the kept iterates' mean and tau/variance estimate
    the same centre and curvature at any tau, the mean with Monte Carlo variance
    proportional to tau. A chain of a few steps (3 in the benchmarks) is far from
    stationary: the kept iterates' spread is mostly the injected noise (variance
    2 sgld_lr tau per step; a random walk's 3 iterates have expected sample variance
    4/3 sgld_lr tau), so A_i = tau/variance is of order 1/sgld_lr whatever h is -- not
    the likelihood's curvature -- and at sgld_lr 3e-4 it is clipped at a_max = 1e3 in
    most weights (93% on the 8x8-digits conv net: benchmarks/RESULTS.md, Issue 7,
    fifteenth slice). tau is therefore a setting of
    the estimator, chosen on meta-validation episodes (a colder chain puts less injected
    noise into mbar_i, and through g_i into m0's meta-gradient;
    docs/constructs/niw_meta.md, "SGLD temperature"). ``kl_episodes`` N weights the
    hyperprior term KL(q(phi) || p(phi)) / N of :meth:`step`.

    SGLD step: ``sgld_lr`` capped per episode at ``sgld_step_scale`` / (top curvature of
    the support NLL at m0, ``sgld_power_iters`` (2) power iterations with finite-difference
    Hessian-vector products, one gradient each, read by Rayleigh-Ritz on the probed
    vectors -- ``sgld_power_ritz``, default; False: the plain power estimate, the
    default of 3 iterations before stop 25 -- 0 iterations turn the cap off) --
    without it the chain diverges wherever sgld_lr is past 2/curvature
    (:func:`ppl.runtime.niw_meta.sgld`). ``sgld_cap`` "gram" (``gauss_newton`` with a task
    that has ``fisher_factor_grad``): the curvature is instead the top eigenvalue of the
    Gauss-Newton matrix U^T U at m0, from the r x r Gram matrix U U^T of one Jacobian that
    also gives the chain's first gradient (for a Gaussian likelihood the Hessian less the
    residual term sum_n (mu_n - y_n) Hess mu_n / sigma^2); "auto" (default) uses it when
    the factor has r <= 8 ``sgld_power_iters`` rows (``task.factor_rows``), where the
    Jacobian's r batched backward passes cost less than the power iterations' gradients
    (benchmarks/RESULTS.md, Issue 7, fifth slice); "power" always power-iterates.
    ``sgld_log`` counts the chains run (``chains``), those whose step was capped
    (``capped``) and the sum of the steps used (``lr_sum``).

    ``batched`` (default True): a meta step's episodes are rows of one evaluation
    (:meth:`chains`; the same maths and draws as episode by episode, which ``False`` and
    any task without ``loss_batch`` use: :func:`can_batch`).

    ``query_draws`` S (default 1: METHODS.md §4's f_i, the query NLL at one draw
    theta ~ q_i*): with S > 1 the query term is the negative log of the S-draw average
    of the query likelihood (:meth:`query_term`), ``query_mix`` "point" (default) per
    query point, -sum_n log (1/S) sum_s p(y_n | theta_s) -- the log of the averaged
    predictive the benchmark scores -- or "joint" over the whole query set,
    -log (1/S) sum_s p(y_q | theta_s). Both are in expectation upper bounds on the
    predictive NLL -log E_q p, tightening as S grows (importance-weighted bounds,
    Burda et al. 2016, with q_i* as the proposal), and at S = 1 both are f_i. This
    departs from METHODS' single-draw estimator: E_q[-log p] penalises the spread of
    q_i*, the bound does not (docs/constructs/niw_meta.md, "Multi-draw query loss").
    """

    def __init__(self, theta_init, *, n0=1.0, gamma0=1e6, l0=1.0, sgld_steps=3,
                 sgld_lr=1e-3, sgld_temp=1.0, a_max=1e3, sgld_burn=0.5, sgld_detrend=False,
                 sgld_power_iters=2, sgld_step_scale=1.0, sgld_precision="variance",
                 sgld_cap="auto", variant="niw", lr=5e-3, sgld_power_ritz=True,
                 lr_hyper=0.1, kl_episodes=1e4, prior_gamma=1.0, prior_n=1.0,
                 prior_l=1e-3, test_samples=20, batched=True, query_draws=1,
                 query_mix="point"):
        dt, dev = theta_init.dtype, theta_init.device
        if isinstance(query_draws, bool) or int(query_draws) != query_draws or query_draws < 1:
            raise ValueError(f"query_draws must be an integer >= 1, not {query_draws!r}")
        if query_mix not in QUERY_MIXES:
            raise ValueError(f"query_mix must be one of {', '.join(QUERY_MIXES)}, "
                             f"not {query_mix!r}")
        self.query_draws, self.query_mix = int(query_draws), query_mix
        self.batched = batched
        if variant == "no_share":
            gamma0 = 1e-8
        self.m0 = torch.nn.Parameter(theta_init.detach().clone())
        self.log_gamma0 = torch.nn.Parameter(torch.full_like(self.m0, math.log(gamma0)))
        self.log_n0 = torch.nn.Parameter(torch.tensor(math.log(n0), dtype=dt, device=dev))
        self.log_l0 = torch.nn.Parameter(torch.tensor(math.log(l0), dtype=dt, device=dev))
        hyper = [self.log_n0, self.log_l0]
        if variant == "niw":
            hyper.append(self.log_gamma0)
        else:
            self.log_gamma0.requires_grad_(False)
        groups = [{"params": [self.m0], "lr": lr}, {"params": hyper, "lr": lr_hyper}]
        self.opt = adam(groups, dev)
        self.sgld = dict(steps=sgld_steps, lr=sgld_lr, temp=sgld_temp, a_max=a_max,
                         burn=sgld_burn, detrend=sgld_detrend, power_iters=sgld_power_iters,
                         step_scale=sgld_step_scale, power_ritz=bool(sgld_power_ritz))
        if sgld_precision not in rtn.PRECISIONS:
            raise ValueError(f"sgld_precision must be one of {', '.join(rtn.PRECISIONS)}, "
                             f"not {sgld_precision!r}")
        # "auto" is resolved from the first task seen (:func:`auto_precision`)
        self.precision = None if sgld_precision == "auto" else sgld_precision
        if sgld_cap not in ("auto", "power", "gram"):
            raise ValueError(f"sgld_cap must be 'auto', 'power' or 'gram', not {sgld_cap!r}")
        self.cap = sgld_cap
        self._check_cap()
        self.sgld_log = {"chains": 0, "capped": 0, "lr_sum": 0.0}
        self.variant = variant
        self.kl_weight = 1.0 / kl_episodes
        self.prior = (torch.zeros_like(self.m0), float(prior_gamma), float(prior_n),
                      float(prior_l))
        self.test_samples = test_samples

    def _check_cap(self):
        if self.cap == "gram" and self.precision not in (None, "gauss_newton"):
            raise ValueError("sgld_cap='gram' needs sgld_precision='gauss_newton' (the Gram "
                             "matrix is that of its Fisher factor)")

    def resolve(self, task) -> str:
        """The local update in use: ``sgld_precision``, or for "auto" the one
        :func:`auto_precision` picks for ``task`` (fixed from then on)."""
        if self.precision is None:
            # no_share (n0 gamma0 -> 0): a curvature update would leave the directions the
            # support data do not see with prior variance 1/(n0 gamma0) = 1e8, so the
            # ablation keeps METHODS' estimator
            self.precision = ("variance" if self.variant == "no_share"
                              else auto_precision(task))
            self._check_cap()
        return self.precision

    def _gram_cap(self, task, ep) -> bool:
        """Whether the SGLD step cap's curvature is the Gauss-Newton matrix's top
        eigenvalue at m0 from one Jacobian (:func:`gram_top_eigenvalues`) instead of
        power iterations: ``gauss_newton`` with a task that gives the gradient with its
        Fisher factor (``fisher_factor_grad``), chains that step and are capped, and
        ``sgld_cap`` "gram", or "auto" with at most 8 factor rows per power iteration
        (class docstring). ``ep`` is an episode of the meta-batch (all alike in shape).
        Raises for "gram" where the task gives no such factor."""
        factor_grad = (getattr(task, "fisher_factor_grad", None)
                       if self.resolve(task) == "gauss_newton" else None)
        if self.cap == "gram" and factor_grad is None:
            raise ValueError(f"sgld_cap='gram': the task {type(task).__name__} gives no "
                             "Fisher factor with its gradient (fisher_factor_grad); use "
                             "sgld_cap='auto' or 'power'")
        s = self.sgld
        return factor_grad is not None and s["power_iters"] > 0 and s["steps"] > 0 and (
            self.cap == "gram" or (self.cap == "auto"
                                   and task.factor_rows(ep) <= 8 * s["power_iters"]))

    def globals(self):
        return (self.m0, self.log_gamma0.exp(), self.log_n0.exp(), self.log_l0.exp())

    def chain(self, task, ep, generator=None):
        """(mbar_i, A_i): SGLD on the support set from m0, as constants, summarised as
        ``sgld_precision`` says (class docstring)."""
        self.resolve(task)
        m0 = self.m0
        s = self.sgld
        info = {}
        curvature = None
        if self._gram_cap(task, ep):
            u0, g0 = task.fisher_factor_grad(m0.detach(), ep, "support")
            curvature = (gram_top_eigenvalue(u0), g0)
        mbar, A, _, _ = rtn.sgld(lambda th: task.loss(th, ep, "support"), m0.detach(),
                                 s["steps"], s["lr"], s["temp"], a_max=s["a_max"],
                                 burn=s["burn"], detrend=s["detrend"],
                                 power_iters=s["power_iters"], step_scale=s["step_scale"],
                                 generator=generator, info=info, curvature=curvature,
                                 power_ritz=s["power_ritz"])
        log = self.sgld_log
        log["chains"] += 1
        log["capped"] += int(info["lr"] < s["lr"])
        log["lr_sum"] += info["lr"]
        if self.precision == "variance":
            return mbar, A
        theta_bar = mbar
        if self.precision == "fisher":
            return theta_bar, _fisher_floor(task.fisher_factor(theta_bar, ep, "support"))
        # newton and gauss_newton need the Fisher factor and the gradient at the chain
        # mean: one Jacobian gives both where the task offers it
        u, grad = _factor_and_grad(task, theta_bar, ep)
        if self.precision == "gauss_newton":
            # the low-rank quadratic of :func:`ppl.runtime.niw_meta.lowrank_posterior_kl`
            return theta_bar, grad, u
        A = _fisher_floor(u)
        return theta_bar - grad / A, A

    def local(self, task, ep, generator=None):
        """(m_i*, v_i*) from SGLD on the support set (constants) and the closed form
        (v_i* the diagonal of V_i* for "gauss_newton")."""
        m0, gamma0, n0, l0 = self.globals()
        if self.resolve(task) == "gauss_newton":
            m, v, _, _ = rtn.lowrank_posterior_kl(*self.chain(task, ep, generator), m0,
                                                  self.log_gamma0, n0, l0)
            return m, v
        mbar, A = self.chain(task, ep, generator)
        return rtn.local_posterior(mbar, A, m0, gamma0, n0)

    def episodes_loss(self, task, batch, generator=None):
        """sum_i (f_i + g_i) over a batch of episodes: the query NLL at one reparameterised
        draw of q_i* plus the expected KL, differentiable in the globals through the
        closed forms only. The chains and draws' noise come episode by episode (the
        generator's order of ``episode_loss`` repeated); the closed forms of the whole
        batch are one [batch, d] evaluation."""
        lowrank = self.resolve(task) == "gauss_newton"
        if self.batched and can_batch(task, batch):
            return self._episodes_loss_rows(task, batch, generator)
        chains = []
        lead = () if self.query_draws == 1 else (self.query_draws,)
        for ep in batch:
            c = self.chain(task, ep, generator)
            # the draws' noise: xi for the d weights, and for the low-rank form eps for
            # the r rows of U (Matheron's rule in lowrank_posterior_kl); S of each for
            # the multi-draw query term
            noise = (rtn.randn_like(c[0], generator, lead + c[0].shape),)
            if lowrank:
                noise += (rtn.randn_like(c[0], generator, lead + c[2].shape[:1]),)
            chains.append(c + noise)
        stacked = [torch.stack(t) for t in zip(*chains, strict=True)]
        *chain, xi = stacked[:-1] if lowrank else stacked
        g, theta = self._kl_and_draws(chain, xi, stacked[-1] if lowrank else None)
        if self.query_draws > 1:
            return self.query_term(task, theta, batch).sum() + g.sum()
        return sum(task.loss(theta[i], ep, "query") for i, ep in enumerate(batch)) + g.sum()

    def _kl_and_draws(self, chain, xi, eps=None):
        """(g [B], theta): the expected KL of each episode's q_i* and the draws of it from
        the noise xi (and for the low-rank form eps): theta [B, d] for one draw, [B, S, d]
        for S draws (xi [B, S, d]). The S draws of an episode share its closed form."""
        n0, l0 = self.log_n0.exp(), self.log_l0.exp()
        if eps is not None:
            if xi.dim() == 2:
                return rtn.lowrank_kl_draw(*chain, self.m0, self.log_gamma0, n0, l0, xi, eps)
            # one fused closed form per draw (its analytic backward is for one draw per
            # episode); g is the same in each, the first one's is kept
            out = [rtn.lowrank_kl_draw(*chain, self.m0, self.log_gamma0, n0, l0,
                                       xi[:, s], eps[:, s]) for s in range(xi.shape[1])]
            return out[0][0], torch.stack([th for _, th in out], 1)
        m, sd, g = rtn.local_posterior_kl(*chain, self.m0, self.log_gamma0, n0, l0)
        if xi.dim() == 2:
            return g, m + sd * xi
        return g, m[:, None] + sd[:, None] * xi

    def query_term(self, task, theta, batch, E=None):
        """The multi-draw query loss of B episodes from S draws theta [B, S, d] of their
        q_i* (``query_draws`` S > 1, class docstring): [B] values of
        "point": -sum_n log (1/S) sum_s p(y_n | theta_s), y_n the query points;
        "joint": -log (1/S) sum_s p(y_q | theta_s), y_q the whole query set;
        each a log-mean-exp over the draws of the task's per-point (``point_nll``) or
        summed (``loss``) query NLL. ``E`` (the stacked episodes) evaluates all B S
        draws in one pass of the task's ``loss_batch`` / ``point_nll_batch``."""
        bsz, S = theta.shape[:2]
        point = self.query_mix == "point"
        if point and not hasattr(task, "point_nll"):
            raise ValueError(f"query_mix='point': the task {type(task).__name__} has no "
                             "per-point query NLL (point_nll); use query_mix='joint'")
        if E is not None:
            rep = {k: v.repeat_interleave(S, 0) for k, v in E.items()}
            flat = theta.reshape(bsz * S, -1)
            nll = (task.point_nll_batch(flat, rep, "query") if point
                   else task.loss_batch(flat, rep, "query")).reshape(bsz, S, -1)
        else:
            one = task.point_nll if point else task.loss
            nll = torch.stack([torch.stack([one(theta[i, s], ep, "query").reshape(-1)
                                            for s in range(S)])
                               for i, ep in enumerate(batch)])
        # nll [B, S, n] ("joint": n = 1, the summed query NLL)
        return -(torch.logsumexp(-nll, 1) - math.log(S)).sum(-1)

    def chains(self, task, batch, generator=None, extra=None, E=None):
        """:meth:`chain` for a meta-batch's B episodes at once (``batched``; tasks with
        ``loss_batch``, :func:`can_batch`): the step cap, the SGLD chains and the
        summaries as [B, ...] tensors, every gradient of the B support losses one
        backward (:func:`ppl.runtime.niw_meta.sgld_rows`). The random draws are those of
        the loop over episodes, in its order: per episode the chain's step noise, then
        the draws ``extra(i, ep)`` names ({name: shape}, None for a d-vector) -- so with the same
        generator the result equals the looped one up to roundoff, unless a chain
        diverges (the looped chain then stops drawing; here its unused draws are still
        taken). Returns (chain tensors, the extra draws per name stacked over episodes)."""
        prec = self.resolve(task)
        E = stack_episodes(batch) if E is None else E   # the caller's stacked episodes
        bsz = len(batch)
        m0 = self.m0.detach()
        theta0 = m0.expand(bsz, -1)
        s = self.sgld

        def potential(th):
            return task.loss_batch(th, E, "support")

        lr = torch.full((bsz,), s["lr"], dtype=m0.dtype, device=m0.device)
        curv, grad0 = None, None
        gram = self._gram_cap(task, batch[0])
        if s["steps"] > 0:
            if gram:
                u0, grad0 = factor_and_grad_rows(task, theta0, E, batch)
                curv = gram_top_eigenvalues(u0)
            elif s["power_iters"] > 0:
                curv, grad0 = rtn.top_curvature_rows(potential, theta0, s["power_iters"],
                                                     ritz=s["power_ritz"])
        if curv is not None:
            ok = torch.isfinite(curv) & (curv > 0)
            capped = s["step_scale"] / torch.where(ok, curv, torch.ones_like(curv))
            lr = torch.where(ok, torch.minimum(lr, capped), lr)
        extras, noise = {}, None
        lrs = lr.tolist()  # one host transfer for the draws' branch and the log below
        if s["steps"] > 0 and s["temp"] > 0:
            # step-major [steps, B, d], as sgld_rows takes step t's draws: filled where
            # the generator draws (as rtn.randn_like) and moved to m0's device once
            # (zero-filled only where a chain with a zero step draws nothing)
            alloc = torch.empty if all(v > 0 for v in lrs) else torch.zeros
            noise = alloc((s["steps"], bsz, m0.shape[-1]), dtype=m0.dtype,
                          device=m0.device if generator is None else generator.device)
        for i, ep in enumerate(batch):
            # a chain with a zero step has no noise (sqrt(2 lr temp) = 0) and, looped,
            # draws none; each step's d draws one call, as the looped chain's randn_like
            if noise is not None and lrs[i] > 0:
                for t in range(s["steps"]):
                    noise[t, i].normal_(generator=generator)
            for name, shape in (extra(i, ep) if extra else {}).items():
                extras.setdefault(name, []).append(rtn.randn_like(m0, generator, shape))
        noise = None if noise is None else noise.to(m0.device)
        mbar, A, _, _, _ = rtn.sgld_rows(potential, theta0, s["steps"], lr, s["temp"],
                                         a_max=s["a_max"], burn=s["burn"],
                                         detrend=s["detrend"], noise=noise, grad0=grad0)
        log = self.sgld_log
        log["chains"] += bsz
        # compared in the step's dtype, as the tensors are (a float32 step of 3e-4 is not
        # "capped" for being below the float 3e-4)
        full = torch.tensor(s["lr"], dtype=lr.dtype).item()
        log["capped"] += sum(v < full for v in lrs)
        log["lr_sum"] += sum(lrs)
        extras = {k: torch.stack(v) for k, v in extras.items()}
        if prec == "variance":
            return (mbar, A), extras
        theta_bar = mbar
        u, grad = factor_and_grad_rows(task, theta_bar, E, batch)
        if prec == "fisher":
            return (theta_bar, _fisher_floor(u)), extras
        if prec == "gauss_newton":
            return (theta_bar, grad, u), extras
        A = _fisher_floor(u)
        return (theta_bar - grad / A, A), extras

    def _episodes_loss_rows(self, task, batch, generator=None):
        """:meth:`episodes_loss` with the B episodes as rows of one evaluation
        (:meth:`chains`, the closed forms, the query losses)."""
        lowrank = self.resolve(task) == "gauss_newton"
        rows = task.factor_rows if lowrank else None

        S = self.query_draws
        lead = () if S == 1 else (S,)

        def extra(i, ep):
            return {"xi": lead + tuple(self.m0.shape) if lead else None,
                    **({"eps": lead + (rows(ep),)} if lowrank else {})}

        E = stack_episodes(batch)
        chain, draws = self.chains(task, batch, generator, extra, E)
        if lowrank:
            _check_rows(chain[2], draws["eps"])
        g, theta = self._kl_and_draws(chain, draws["xi"], draws.get("eps"))
        if S > 1:
            return self.query_term(task, theta, batch, E).sum() + g.sum()
        return task.loss_batch(theta, E, "query").sum() + g.sum()

    def draws_rows(self, task, batch, n=None, generator=None):
        """:meth:`draws` for B episodes at once: [B, n, d], the same draws as the loop
        over episodes with the same generator (:meth:`chains`)."""
        n = n or self.test_samples
        lowrank = self.resolve(task) == "gauss_newton"
        d = self.m0.shape[-1]

        def extra(i, ep):
            if lowrank:
                return {"xi": (n, d), "eps": (n, task.factor_rows(ep))}
            return {"eps": (n, d)}

        with torch.no_grad():
            chain, draws = self.chains(task, batch, generator, extra)
            m0, gamma0, n0, l0 = self.globals()
            if lowrank:
                theta_bar, grad, U = chain
                _check_rows(U, draws["eps"])
                # the [B, n] draws share their episode's chain: a draw dimension inside
                return rtn.lowrank_posterior_kl(theta_bar[:, None], grad[:, None],
                                                U[:, None], m0, self.log_gamma0, n0, l0,
                                                draws["xi"], draws["eps"])[3]
            m, v = rtn.local_posterior(*chain, m0, gamma0, n0)
            return m[:, None] + v.sqrt()[:, None] * draws["eps"]

    def episode_loss(self, task, ep, generator=None):
        """f_i + g_i of one episode (:meth:`episodes_loss`)."""
        return self.episodes_loss(task, [ep], generator)

    def step(self, task, batch, generator=None) -> float:
        self.opt.zero_grad()
        loss = self.episodes_loss(task, batch, generator) / len(batch)
        n0, l0 = self.log_n0.exp(), self.log_l0.exp()
        loss = loss + self.kl_weight * rtn.kl_niw_logs(self.m0, self.log_gamma0, n0, l0,
                                                       *self.prior)
        loss.backward()
        return _guarded_step(self, loss)

    def draws(self, task, ep, n=None, generator=None):
        """Test time: q_i* on the support set at the mean of q(phi), then n draws."""
        n = n or self.test_samples
        if self.resolve(task) == "gauss_newton":
            with torch.no_grad():
                theta_bar, grad, U = self.chain(task, ep, generator)
                xi = rtn.randn_like(theta_bar, generator, (n,) + theta_bar.shape)
                eps = rtn.randn_like(theta_bar, generator, (n, U.shape[0]))
                m0, _, n0, l0 = self.globals()
                return rtn.lowrank_posterior_kl(theta_bar, grad, U, m0, self.log_gamma0,
                                                n0, l0, xi, eps)[3]
        with torch.no_grad():
            m, v = self.local(task, ep, generator)
        eps = rtn.randn_like(m, generator, (n,) + m.shape)
        return m + v.sqrt() * eps


#: ``sgld_precision="auto"``: the local update per episode-likelihood family
#: (``task.family``); a family not listed gets "variance", which needs nothing of it
AUTO_PRECISION = {"normal": "gauss_newton", "categorical": "variance",
                  "prototype": "variance"}


def auto_precision(task) -> str:
    """The local update ``sgld_precision="auto"`` picks from the episode likelihood's
    family ``task.family`` (docs/constructs/niw_meta.md, "Choosing the local update"):

    * "normal" (y_n ~ N(mu_n(theta), s_n^2) with data y_n that do not enter mu_n):
      "gauss_newton". U^T U = sum_n grad mu_n grad mu_n^T / s_n^2 (+ the scale's rows) is
      then the exact Fisher information of the support likelihood and the Hessian of the
      summed NLL less the residual term sum_n (mu_n - y_n) Hess mu_n / s_n^2, which is
      zero in expectation under the model: the Gaussian approximation of METHODS.md §4 by
      its curvature, not by the variance of 1-10 noisy iterates.
    * "categorical", "prototype" and anything else: "variance" (METHODS' estimator). For
      the prototype likelihood the support labels also build the prototypes, i.e. the
      "targets" the logits are scored against move with the support embeddings, so the
      categorical Fisher of the logits is not the expected Hessian (measured: the support
      loss's curvature along the Gauss-Newton step is negative on average at trained
      weights, benchmarks/RESULTS.md, Issue 7, fifth slice), and "variance" wins there.
    """
    return AUTO_PRECISION.get(getattr(task, "family", None), "variance")


def stack_episodes(batch: list[dict]) -> dict:
    """Episode dicts of equal shapes -> one dict of [B, ...] tensors (inverse of
    :func:`split`)."""
    return {k: torch.stack([ep[k] for ep in batch]) for k in batch[0]}


def split(batch: dict) -> list[dict]:
    """A dict of [n, ...] tensors -> n episode dicts."""
    n = next(iter(batch.values())).shape[0]
    return [{k: v[i] for k, v in batch.items()} for i in range(n)]


def can_batch(task, batch: list[dict]) -> bool:
    """Whether a meta-batch can be one batched evaluation: the task has ``loss_batch``
    (the harness's RegressionTask and ProtoTask; a BDL model's
    :class:`ppl.infer.meta_tasks.ModelTask` traces its model episode by episode and has
    not) and every episode has the same
    keys and shapes (the episode sources give such batches)."""
    if not hasattr(task, "loss_batch") or not batch:
        return False
    first = batch[0]
    return all(ep.keys() == first.keys() and all(ep[k].shape == first[k].shape for k in ep)
               for ep in batch[1:])


def _check_rows(U: torch.Tensor, eps: torch.Tensor) -> None:
    """The low-rank draws were sized by ``task.factor_rows`` before the factor existed:
    a task whose factor has another row count must fail here, not draw wrongly."""
    if U.shape[-2] != eps.shape[-1]:
        raise ValueError(f"task.factor_rows gave {eps.shape[-1]} rows, its Fisher factor "
                         f"has {U.shape[-2]}")


def adam(groups: list[dict], device: torch.device) -> torch.optim.Adam:
    """Adam over the parameter ``groups`` of a meta-learner (NIW, MAML, Plain alike): the
    fused kernel on CPU and CUDA -- the same update as the per-tensor loop (equal to
    roundoff, tests/test_niw.py) in one kernel per step instead of ~15 small operations
    per parameter, about half the optimiser's time on the few small tensors here."""
    return torch.optim.Adam(groups, fused=True if device.type in ("cpu", "cuda") else None)


def _guarded_step(trainer, loss) -> float:
    """Apply the optimiser step unless the loss or a gradient is not finite (one episode
    whose inner loop diverged would otherwise turn every parameter into NaN); skipped
    steps are counted in ``trainer.skipped``."""
    params = [q for g in trainer.opt.param_groups for q in g["params"]]
    # one reduction and one host sync for the loss and every gradient
    finite = bool(torch.isfinite(torch.cat(
        [loss.detach().reshape(1)] + [q.grad.reshape(-1) for q in params
                                      if q.grad is not None])).all())
    if finite:
        trainer.opt.step()
    else:
        trainer.skipped = getattr(trainer, "skipped", 0) + 1
    return float(loss.detach())


class MAML:
    """MAML (Finn et al. 2017): ``inner_steps`` gradient steps of size ``inner_lr`` on the
    support NLL from the meta-learned theta, then the query NLL; second order
    differentiates through the inner steps (graph kept: memory grows with the steps),
    first order treats the inner gradients as constants. ``batched`` as in :class:`NIW`
    (the B inner loops as rows: :meth:`adapt_rows`)."""

    def __init__(self, theta_init, *, inner_steps=3, inner_lr=1e-3, first_order=False,
                 lr=5e-3, batched=True):
        self.theta = torch.nn.Parameter(theta_init.detach().clone())
        self.inner_steps, self.inner_lr, self.first_order = inner_steps, inner_lr, first_order
        self.opt = adam([{"params": [self.theta], "lr": lr}], self.theta.device)
        self.batched = batched

    def _inner(self, support_loss, th, train):
        """``inner_steps`` gradient steps on ``support_loss`` (a scalar of th) from th."""
        for _ in range(self.inner_steps):
            with torch.enable_grad():
                (g,) = torch.autograd.grad(support_loss(th), th,
                                           create_graph=train and not self.first_order)
            if self.first_order or not train:
                g = g.detach()
            th = th - self.inner_lr * g
        return th

    def adapt(self, task, ep, train=True):
        th = self.theta if train else self.theta.detach().requires_grad_(True)
        return self._inner(lambda t: task.loss(t, ep, "support"), th, train)

    def adapt_rows(self, task, E: dict, bsz: int, train=True):
        """:meth:`adapt` for B stacked episodes ``E`` at once: the inner loop on weights
        [B, d] (one row per episode, all starting at theta), each inner gradient of the
        B support losses one backward -- the sum's gradient, as row b's loss depends on
        row b only. Second order keeps the graph through every step, as the loop does."""
        if train:
            th = self.theta.expand(bsz, -1)
        else:
            th = self.theta.detach().expand(bsz, -1).clone().requires_grad_(True)
        return self._inner(lambda t: task.loss_batch(t, E, "support").sum(), th, train)

    def episode_loss(self, task, ep, generator=None):
        return self.episodes_loss(task, [ep], generator)

    def episodes_loss(self, task, batch, generator=None):
        """sum_i of the query NLL after the inner loop on episode i's support set; with
        ``batched`` (and :func:`can_batch`) the B inner loops are one (:meth:`adapt_rows`)."""
        if self.batched and can_batch(task, batch):
            E = stack_episodes(batch)
            return task.loss_batch(self.adapt_rows(task, E, len(batch)), E, "query").sum()
        return sum(task.loss(self.adapt(task, ep), ep, "query") for ep in batch)

    def step(self, task, batch, generator=None) -> float:
        self.opt.zero_grad()
        loss = self.episodes_loss(task, batch, generator) / len(batch)
        loss.backward()
        return _guarded_step(self, loss)

    def draws(self, task, ep, n=None, generator=None):
        return self.adapt(task, ep, train=False).detach()[None]

    def draws_rows(self, task, batch, n=None, generator=None):
        """:meth:`draws` of B episodes at once: [B, 1, d]."""
        E = stack_episodes(batch)
        return self.adapt_rows(task, E, len(batch), train=False).detach()[:, None]


class Plain:
    """One shared theta trained on the query loss with no adaptation: with the
    prototype likelihood this is ProtoNet (Snell et al. 2017)."""

    def __init__(self, theta_init, *, lr=5e-3, batched=True):
        self.theta = torch.nn.Parameter(theta_init.detach().clone())
        self.opt = adam([{"params": [self.theta], "lr": lr}], self.theta.device)
        self.batched = batched

    def episode_loss(self, task, ep, generator=None):
        return self.episodes_loss(task, [ep], generator)

    def episodes_loss(self, task, batch, generator=None):
        """sum_i of the query NLL at the shared theta (one batched evaluation of the B
        episodes with ``batched`` and :func:`can_batch`)."""
        if self.batched and can_batch(task, batch):
            th = self.theta.expand(len(batch), -1)
            return task.loss_batch(th, stack_episodes(batch), "query").sum()
        return sum(task.loss(self.theta, ep, "query") for ep in batch)

    step = MAML.step

    def draws(self, task, ep, n=None, generator=None):
        return self.theta.detach()[None]
