"""Meta-training: NIW hierarchical Bayes with the one-time episodic update (Kim &
Hospedales, ICLR 2024; METHODS.md §4), and the baselines MAML (first/second order) and
ProtoNet in the same harness; the ``meta`` inference method's runner.

A *task* gives the episode likelihood as a function of the flat weight vector theta:
``task.loss(theta, ep, part)`` is -log p(D | theta) summed over the support
(``part="support"``) or query (``part="query"``) points of one episode, and
``task.outputs(thetas, ep)`` the query predictions for a batch of draws (and, for NIW's
``sgld_precision`` other than "variance", ``task.fisher_factor(theta, ep, part)``: U with
U^T U the Fisher information of that summed NLL). Trainers hold the
global parameters and give ``episode_loss(task, ep)`` (what meta-training minimises) and
``predictive(task, ep)`` (test-time adaptation on the support set, then draws).

NIW per episode (all closed form, METHODS.md §4): SGLD on the support loss, warm-started
at m0, gives (mbar_i, A_i) as constants (iterate mean and variance, or, with
``sgld_precision="newton"``, the Fisher diagonal and the Newton centre at the chain
mean; with ``"gauss_newton"``, the low-rank Fisher U^T U and that centre in the dense
closed form); q_i* = N(m_i*, 1/gamma_i*) with gamma_i* = A_i + n0 gamma0,
m_i* = (A_i mbar_i + n0 gamma0 m0)/gamma_i*; the episode loss is f_i + g_i with
f_i = -log p(query | theta), theta ~ q_i* (reparameterised) and g_i the expected KL; plus
KL(q(phi) || p(phi)) / N over the objective. Gradients reach (m0, gamma0, n0, l0) through
the closed forms only, so memory is flat in the SGLD steps.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from pathlib import Path

import torch

# one list each for the checker and the learner (SELECT: the validation scores by which
# meta_train keeps a checkpoint, and infer meta and fewshot.py choose)
from ..constructs.niw_meta import META_OPTIONS, QUERY_MIXES, SELECT
from ..runtime import niw_meta as rtn


# ---- trainers --------------------------------------------------------------------------
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
    the support NLL at m0, ``sgld_power_iters`` power iterations with finite-difference
    Hessian-vector products, one gradient each; 0 turns the cap off) --
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
                 sgld_power_iters=3, sgld_step_scale=1.0, sgld_precision="variance",
                 sgld_cap="auto", variant="niw", lr=5e-3,
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
                         step_scale=sgld_step_scale)
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
                                 generator=generator, info=info, curvature=curvature)
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
                curv, grad0 = rtn.top_curvature_rows(potential, theta0, s["power_iters"])
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


def can_batch(task, batch: list[dict]) -> bool:
    """Whether a meta-batch can be one batched evaluation: the task has ``loss_batch``
    (the harness's RegressionTask and ProtoTask; a BDL model's :class:`ModelTask`
    traces its model episode by episode and has not) and every episode has the same
    keys and shapes (the episode sources give such batches)."""
    if not hasattr(task, "loss_batch") or not batch:
        return False
    first = batch[0]
    return all(ep.keys() == first.keys() and all(ep[k].shape == first[k].shape for k in ep)
               for ep in batch[1:])


def factor_and_grad_rows(task, theta: torch.Tensor, E: dict, batch: list[dict]):
    """(U [B, r, d], grad [B, d]) of the B support losses at theta [B, d]: the task's
    batched ``fisher_factor_grad_batch`` where it has one, else
    :func:`_factor_and_grad` episode by episode, stacked (same values)."""
    rows = getattr(task, "fisher_factor_grad_batch", None)
    if rows is not None:
        out = rows(theta, E, "support")
        if out is not None:
            return out
    us, gs = zip(*(_factor_and_grad(task, t, ep) for t, ep in zip(theta, batch, strict=True)),
                 strict=True)
    return torch.stack(us), torch.stack(gs)


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


# ---- tasks: the episode likelihood -----------------------------------------------------
def categorical_fisher_factor(jac: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """U [n * C, d] with U^T U = sum_n J_n^T (diag p_n - p_n p_n^T) J_n, the Fisher
    information of n categorical points with logits' Jacobians J_n = jac[n] [C, d] and
    probabilities p_n: diag p - p p^T = D (I - q q^T) D with D = diag sqrt(p), q = sqrt(p)
    a unit vector, and I - q q^T is a projector (its own square root), so
    U_n = (I - q q^T) D J_n. The diagonal of U^T U is
    sum_n [sum_c p_nc J_ncj^2 - (sum_c p_nc J_ncj)^2]."""
    q = p.clamp_min(0.0).sqrt()[..., None]                  # [n, C, 1]
    dj = q * jac
    u = dj - q * (q * dj).sum(-2, keepdim=True)
    return u.reshape(-1, jac.shape[-1])


def _diag_of_gram(u: torch.Tensor) -> torch.Tensor:
    """diag(U^T U) of a factor U [rows, P]."""
    return (u ** 2).sum(-2)


def fisher_diag(task, theta: torch.Tensor, ep: dict, part: str = "support") -> torch.Tensor:
    """The diagonal of the Fisher information U^T U, U = ``task.fisher_factor``."""
    return _diag_of_gram(task.fisher_factor(theta, ep, part))


def _fisher_floor(u: torch.Tensor) -> torch.Tensor:
    """The Fisher diagonal of the factor u, floored at 1e-4: an exact curvature, not a
    noisy variance, so not clipped at a_max (clipping a stiff coordinate's curvature would
    make the Newton centre overshoot it by the clip ratio)."""
    return _diag_of_gram(u).clamp_min(1e-4)


def _factor_and_grad(task, theta: torch.Tensor, ep: dict, part: str = "support"):
    """(U, grad U(theta)) of the summed NLL of ``part``: from one Jacobian where the task
    has ``fisher_factor_grad``, else the factor and one autograd gradient."""
    both = getattr(task, "fisher_factor_grad", None)
    if both is not None:
        return both(theta, ep, part)
    grad = rtn._grad(lambda th: task.loss(th, ep, part), theta)[1]
    return task.fisher_factor(theta, ep, part), grad


def _jacobian(fn, theta: torch.Tensor, with_value: bool = False):
    """d fn(theta) / d theta, shape fn(theta).shape + theta.shape, by one batched
    backward (``is_grads_batched``; ``torch.func.jacrev`` refuses to run under the
    saved-tensor hooks of :class:`SavedTensorMeter`); with ``with_value`` the pair
    (jacobian, fn(theta) detached) from the same forward pass."""
    th = theta.detach().requires_grad_(True)
    with torch.enable_grad():
        out = fn(th)
    jac = _jacobian_of(out, th)
    return (jac, out.detach()) if with_value else jac


def _jacobian_of(out: torch.Tensor, th: torch.Tensor, retain_graph: bool = False):
    """d out / d th, shape out.shape + th.shape, for an ``out`` already computed from the
    leaf ``th``: one batched backward over the rows of the identity."""
    with torch.enable_grad():
        eye = torch.eye(out.numel(), dtype=out.dtype, device=out.device)
        (jac,) = torch.autograd.grad(out.reshape(-1), th, grad_outputs=eye,
                                     is_grads_batched=True, retain_graph=retain_graph)
    return jac.reshape(out.shape + th.shape)


def gram_top_eigenvalues(U: torch.Tensor) -> torch.Tensor:
    """The largest eigenvalue of the low-rank Fisher (Gauss-Newton) matrix U^T U [d, d],
    computed as that of the small Gram matrix U U^T [r, r] (the same non-zero spectrum):
    the stable-SGLD-step curvature of ``sgld_precision="gauss_newton"`` without power
    iterations (docs/constructs/niw_meta.md, "Step cap from the Gram matrix"). U [..., r, d]
    -> [...]: one per factor (a meta-batch's [B, r, d] gives the B episodes' own)."""
    return torch.linalg.eigvalsh(U @ U.transpose(-1, -2))[..., -1]


def gram_top_eigenvalue(U: torch.Tensor) -> float:
    """:func:`gram_top_eigenvalues` as a host float, the largest over any leading
    dimensions (one episode's chain, :meth:`NIW.chain`)."""
    return float(gram_top_eigenvalues(U).max())


class RegressionTask:
    """y ~ N(f_theta(x)[:, 0], sigma^2) on support/query points."""

    kind = "regression"
    family = "normal"

    def __init__(self, net, sigma=0.3):
        self.flat, self.sigma = rtn.FlatNet(net), sigma

    def mean(self, theta, x):
        return self.flat(theta, x)[..., 0]

    def loss(self, theta, ep, part):
        x, y = (ep["xs"], ep["ys"]) if part == "support" else (ep["xq"], ep["yq"])
        r = (y - self.mean(theta, x)) / self.sigma
        return 0.5 * (r ** 2).sum() + y.numel() * (math.log(self.sigma)
                                                   + 0.5 * math.log(2 * math.pi))

    def point_nll(self, theta, ep, part):
        """[points]: each point's NLL at theta (:meth:`loss` is their sum)."""
        x, y = (ep["xs"], ep["ys"]) if part == "support" else (ep["xq"], ep["yq"])
        r = (y - self.mean(theta, x)) / self.sigma
        return 0.5 * r ** 2 + (math.log(self.sigma) + 0.5 * math.log(2 * math.pi))

    def point_nll_batch(self, theta, E, part):
        """[B, points]: :meth:`point_nll` of B stacked episodes at their own theta [B, d]."""
        x, y = (E["xs"], E["ys"]) if part == "support" else (E["xq"], E["yq"])
        r = (y - self.flat.batched(theta, x)[..., 0]) / self.sigma
        return (0.5 * r ** 2 + (math.log(self.sigma) + 0.5 * math.log(2 * math.pi))
                ).reshape(r.shape[0], -1)

    def fisher_factor(self, theta, ep, part="support"):
        """U [points, d] with U^T U the Fisher information of the summed NLL at theta:
        for a Gaussian likelihood the Gauss-Newton matrix J^T J / sigma^2, U = J / sigma
        (J = d mu / d theta, one row per point). Its diagonal
        F_j = sum_n (d mu_n / d theta_j)^2 / sigma^2 is, for a ReLU MLP (each output linear
        in any single weight), the exact Hessian diagonal (METHODS.md §4: A_i)."""
        x = ep["xs"] if part == "support" else ep["xq"]
        return self._mean_jacobian(theta, x)[0] / self.sigma

    def _mean_jacobian(self, theta, x):
        """(d mu / d theta [points, d], mu): the network's own reverse pass
        (:meth:`ppl.runtime.niw_meta.FlatNet.jacobian`) where it has one, else autograd."""
        direct = self.flat.jacobian(theta, x)
        if direct is not None:
            return direct[0][..., 0, :], direct[1][..., 0]
        return _jacobian(lambda th: self.mean(th, x), theta, with_value=True)

    def factor_rows(self, ep, part="support"):
        """Rows of :meth:`fisher_factor`: one per point."""
        return ep["ys" if part == "support" else "yq"].numel()

    def loss_batch(self, theta, E, part):
        """:meth:`loss` of B stacked episodes ``E`` (:func:`stack_episodes`) at their own
        weights theta [B, d] in one pass (:meth:`ppl.runtime.niw_meta.FlatNet.batched`):
        [B] losses."""
        x, y = (E["xs"], E["ys"]) if part == "support" else (E["xq"], E["yq"])
        r = (y - self.flat.batched(theta, x)[..., 0]) / self.sigma
        return 0.5 * (r ** 2).reshape(r.shape[0], -1).sum(-1) + y[0].numel() * (
            math.log(self.sigma) + 0.5 * math.log(2 * math.pi))

    def fisher_factor_grad_batch(self, theta, E, part="support"):
        """:meth:`fisher_factor_grad` of B stacked episodes at theta [B, d]:
        (U [B, points, d], grad [B, d]) from one batched reverse pass of the network
        (:meth:`ppl.runtime.niw_meta.FlatNet.jacobian_batched`); None for a network
        without one (the caller goes episode by episode)."""
        x, y = (E["xs"], E["ys"]) if part == "support" else (E["xq"], E["yq"])
        # U = J / sigma scaled inside the reverse pass (one pass less over [B, n, d])
        direct = self.flat.jacobian_batched(theta, x, 1.0 / self.sigma)
        if direct is None:
            return None
        u = direct[0][..., 0, :]
        resid = (direct[1][..., 0] - y) / self.sigma
        return u, (u.transpose(-1, -2) @ resid[..., None])[..., 0]

    def fisher_factor_grad(self, theta, ep, part="support"):
        """(U, grad U(theta)) from one Jacobian: U = J/sigma as :meth:`fisher_factor`, and
        the gradient of the summed NLL sum_n (mu_n - y_n)^2 / (2 sigma^2),
        J^T (mu - y) / sigma^2 = U^T (mu - y) / sigma -- no extra backward pass."""
        x, y = (ep["xs"], ep["ys"]) if part == "support" else (ep["xq"], ep["yq"])
        jac, mu = self._mean_jacobian(theta, x)
        u = jac / self.sigma
        return u, u.transpose(-1, -2) @ ((mu - y) / self.sigma)

    def metrics(self, thetas, ep):
        mu = self.mean(thetas, ep["xq"])          # [S, Q]
        y = ep["yq"]
        normal = torch.distributions.Normal(mu, self.sigma, validate_args=False)
        logp = torch.logsumexp(normal.log_prob(y), 0) - math.log(mu.shape[0])
        pit = normal.cdf(y).mean(0)               # predictive CDF at y (mixture)
        return {"err": float(((mu.mean(0) - y) ** 2).mean()), "nll": float(-logp.mean()),
                "pit": pit}


class ProtoTask:
    """Prototype likelihood: embeddings e = f_theta(x); class prototypes are the mean
    support embeddings; p(y = c | x) = softmax_c(-||e - proto_c||^2). The support loss
    classifies the support points themselves."""

    kind = "classification"
    family = "prototype"

    def __init__(self, net, ways):
        self.flat, self.ways = rtn.FlatNet(net), ways

    def logits(self, theta, ep, x):
        """Scores of the points x against the support prototypes; x is ep["xs"] itself
        (the support loss) -> its embeddings are the support's, computed once (every
        SGLD, step-cap and MAML inner gradient is of that loss)."""
        support = self.flat(theta, ep["xs"])
        query = support if x is ep["xs"] else self.flat(theta, x)
        return rtn.prototype_logits(support, ep["ys"], query, self.ways)

    def fisher_factor(self, theta, ep, part="support"):
        """U [points * ways, d] with U^T U the Fisher information of the summed categorical
        NLL at theta (the points of ``part`` scored against the support prototypes):
        :func:`categorical_fisher_factor` of the logits' Jacobian (METHODS.md §4: A_i)."""
        return self.fisher_factor_grad(theta, ep, part)[0]

    def factor_rows(self, ep, part="support"):
        """Rows of :meth:`fisher_factor`: one per (point, class)."""
        return ep["ys" if part == "support" else "yq"].numel() * self.ways

    def fisher_factor_grad(self, theta, ep, part="support"):
        """(U, grad U(theta)) from one Jacobian J of the logits: U as
        :meth:`fisher_factor` and the gradient of the summed cross-entropy,
        sum_n J_n^T (p_n - onehot(y_n)) -- no extra backward pass."""
        x, y = (ep["xs"], ep["ys"]) if part == "support" else (ep["xq"], ep["yq"])
        jac, z = _jacobian(lambda t: self.logits(t, ep, x), theta, with_value=True)
        p = z.softmax(-1)                                                  # [n, C]
        resid = p - torch.nn.functional.one_hot(y.long(), p.shape[-1]).to(p.dtype)
        grad = torch.einsum("nc,ncd->d", resid, jac)
        return categorical_fisher_factor(jac, p), grad

    def loss(self, theta, ep, part):
        x, y = (ep["xs"], ep["ys"]) if part == "support" else (ep["xq"], ep["yq"])
        return torch.nn.functional.cross_entropy(self.logits(theta, ep, x), y,
                                                 reduction="sum")

    def point_nll(self, theta, ep, part):
        """[points]: each point's cross-entropy at theta (:meth:`loss` is their sum)."""
        x, y = (ep["xs"], ep["ys"]) if part == "support" else (ep["xq"], ep["yq"])
        return torch.nn.functional.cross_entropy(self.logits(theta, ep, x), y,
                                                 reduction="none")

    def loss_batch(self, theta, E, part):
        """:meth:`loss` of B stacked episodes ``E`` at their own weights theta [B, d], in
        one pass (:meth:`ppl.runtime.niw_meta.FlatNet.batched`; the support embedded
        once, as in :meth:`logits`): [B] losses."""
        return self.point_nll_batch(theta, E, part).sum(-1)

    def point_nll_batch(self, theta, E, part):
        """[B, points]: the per-point terms of :meth:`loss_batch`."""
        support = self.flat.batched(theta, E["xs"])
        if part == "support":
            query, y = support, E["ys"]
        else:
            query, y = self.flat.batched(theta, E["xq"]), E["yq"]
        z = rtn.prototype_logits(support, E["ys"], query, self.ways)
        nll = torch.nn.functional.cross_entropy(z.reshape(-1, z.shape[-1]), y.reshape(-1),
                                                reduction="none")
        return nll.reshape(y.shape[0], -1)

    def metrics(self, thetas, ep):
        probs = torch.stack([self.logits(t, ep, ep["xq"]).softmax(-1) for t in thetas]).mean(0)
        y = ep["yq"]
        conf, pred = probs.max(-1)
        return {"err": float((pred != y).to(probs.dtype).mean()),
                "nll": float(-probs.gather(-1, y[:, None]).clamp_min(1e-12).log().mean()),
                "conf": conf, "correct": (pred == y).to(probs.dtype)}


def split(batch: dict) -> list[dict]:
    """A dict of [n, ...] tensors -> n episode dicts."""
    n = next(iter(batch.values())).shape[0]
    return [{k: v[i] for k, v in batch.items()} for i in range(n)]


def calibration(task, parts: list[dict]) -> float:
    """ECE. Classification: 15 equal-width confidence bins, sum_b |acc_b - conf_b| n_b/n.
    Regression: the quantile calibration error of the predictive, mean over levels
    p = 0.05, 0.10, ..., 0.95 of |P(F(y) <= p) - p| (F the predictive CDF)."""
    if task.kind == "classification":
        conf = torch.cat([p["conf"] for p in parts])
        correct = torch.cat([p["correct"] for p in parts])
        bins = torch.clamp((conf * 15).long(), max=14)
        ece = conf.new_zeros(())
        for b in range(15):
            sel = bins == b
            if sel.any():
                gap = (correct[sel].mean() - conf[sel].mean()).abs()
                ece = ece + sel.sum() / conf.numel() * gap
        return float(ece)
    pit = torch.cat([p["pit"] for p in parts])
    levels = torch.arange(1, 20, dtype=pit.dtype, device=pit.device) / 20
    cover = (pit[None, :] <= levels[:, None]).to(pit.dtype).mean(1)
    return float((cover - levels).abs().mean())


def evaluate(trainer, task, episodes: list[dict], generator=None, chunk: int = 20,
             intervals: bool = False) -> dict:
    """Query error with a 95% interval over episodes, NLL, ECE on meta-test episodes.
    The test-time adaptation and draws of ``chunk`` episodes are one batched evaluation
    where the trainer is ``batched`` and has ``draws_rows`` (same draws, same order as
    episode by episode: :meth:`NIW.chains`). ``intervals``: also ``nll_ci`` (1.96 times
    the standard error of the per-episode NLLs) and ``ece_ci`` (:func:`ece_interval`)."""
    parts = []
    rows = getattr(trainer, "draws_rows", None) if getattr(trainer, "batched", False) else None
    for start in range(0, len(episodes), chunk):
        part = episodes[start:start + chunk]
        if rows is not None and can_batch(task, part):
            ths = rows(task, part, generator=generator)
        else:
            ths = [trainer.draws(task, ep, generator=generator) for ep in part]
        for th, ep in zip(ths, part, strict=True):
            with torch.no_grad():
                parts.append(task.metrics(th, ep))
    errs = torch.tensor([p["err"] for p in parts], dtype=torch.float64)
    out = {"err": float(errs.mean()), "err_ci": _half_width(errs),
           "nll": sum(p["nll"] for p in parts) / len(parts),
           "ece": calibration(task, parts)}
    if intervals:
        out["nll_ci"] = _half_width(torch.tensor([p["nll"] for p in parts],
                                                 dtype=torch.float64))
        out["ece_ci"] = ece_interval(task, parts)
    return out


def _half_width(x: torch.Tensor) -> float:
    """1.96 standard errors of the mean of i.i.d. per-episode values x (nan for one)."""
    return 1.96 * float(x.std()) / math.sqrt(len(x)) if len(x) > 1 else float("nan")


def ece_interval(task, parts: list[dict], reps: int = 200, seed: int = 0) -> float:
    """Half-width of a 95% interval of :func:`calibration` over meta-test episodes:
    1.96 times the bootstrap standard deviation of the ECE of ``reps`` resamples of the
    episodes with replacement (the episodes are i.i.d.; the points within one are not,
    so whole episodes are resampled). Seeded; nan for one episode."""
    if len(parts) < 2:
        return float("nan")
    g = torch.Generator().manual_seed(seed)
    n = len(parts)
    vals = torch.tensor([calibration(task, [parts[j] for j in
                                            torch.randint(n, (n,), generator=g).tolist()])
                         for _ in range(reps)], dtype=torch.float64)
    return 1.96 * float(vals.std())

class SavedTensorMeter:
    """Peak bytes of tensors held for backward (autograd's saved tensors), tracked live
    through ``torch.autograd.graph.saved_tensors_hooks``: the memory that MAML's unrolled
    inner loop grows and NIW's one-time update does not. Device-independent."""

    def __init__(self):
        self.live = 0
        self.peak = 0
        meter = self

        class _Handle:
            __slots__ = ("t", "n")

            def __init__(self, t):
                self.t = t
                self.n = t.numel() * t.element_size()
                meter.live += self.n
                meter.peak = max(meter.peak, meter.live)

            def __del__(self):
                meter.live -= self.n

        self._hooks = torch.autograd.graph.saved_tensors_hooks(_Handle, lambda h: h.t)

    def __enter__(self):
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        return self._hooks.__exit__(*exc)


def episode_peak_mb(trainer, task, ep: dict, generator=None) -> float:
    """Peak MB of one episode's meta-gradient (``trainer.episode_loss`` and its
    backward): the tensors autograd saves for backward (:class:`SavedTensorMeter`), or on
    CUDA the allocator's peak above what was allocated before. Leaves no gradients."""
    cuda = ep["xs"].is_cuda
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    with SavedTensorMeter() as meter:
        trainer.episode_loss(task, ep, generator).backward()
    peak_mb = meter.peak / 2 ** 20
    if cuda:
        torch.cuda.synchronize()
        peak_mb = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
    for p in trainer.opt.param_groups:
        for q in p["params"]:
            q.grad = None
    return peak_mb


# the validation draws' generator, one for every checkpoint and method; apart from the
# episode seeds of fewshot.py (20_000 + seed for its validation episodes), so that the
# draws do not replay the stream that made the episodes
VAL_SEED = 30_011


def meta_train(trainer, task, src, *, steps, batch, generator=None, progress=False,
               measure_memory=True, val=None, val_every=0, select: str = "err") -> dict:
    """``steps`` updates of ``batch`` fresh meta-train episodes each. Returns the loss
    history, the number of steps skipped for a non-finite loss or gradient
    (``skipped``), NIW's SGLD step log (``sgld``: chains, capped, lr_sum), wall seconds per
    episode and the peak MB of saved tensors per episode
    (measured on one extra single-episode forward/backward, plus the CUDA allocator's
    peak on a GPU).

    Best-checkpoint selection on meta-validation episodes ``val`` (a list of episodes
    held out of meta-train, never meta-test): every ``val_every`` steps and after the
    last, :func:`evaluate` scores the trainer on ``val`` (a fixed generator, so every
    checkpoint and every method sees the same validation draws); the parameters with the
    lowest validation score are restored at the end. ``select`` is the score
    (:data:`SELECT`): "err", the query error (MSE or 1 - accuracy), or "nll", the
    predictive's negative log-likelihood per query point, -log (1/S) sum_s p(y | theta_s)
    (a strictly proper scoring rule: it is lowest in expectation for the true predictive,
    so it rewards calibration, which the error does not see). ``val_err``, ``val_nll``
    (both at the kept checkpoint), ``best_step`` (meta steps taken at that checkpoint)
    are returned, ``val_curve`` the (step, score) pairs; the validation passes are left
    out of ``s_per_episode`` and of the SGLD log."""
    if select not in SELECT:
        raise ValueError(f"select must be one of {SELECT}, not {select!r}")
    history = []
    every = max(1, steps // 10)
    # the counters report this run (a trainer may be trained again: a warm start)
    trainer.skipped = 0
    if hasattr(trainer, "sgld_log"):
        trainer.sgld_log = {k: type(v)(0) for k, v in trainer.sgld_log.items()}
    params = [q for g in trainer.opt.param_groups for q in g["params"]]
    on_cuda = params[0].is_cuda

    def sync():
        if on_cuda:  # CUDA kernels run asynchronously: time only completed work
            torch.cuda.synchronize(params[0].device)

    best = {"val_err": float("inf"), "val_nll": float("inf"), "best_step": 0,
            "val_curve": []}
    val_s = 0.0

    def validate(step):
        nonlocal val_s
        sync()
        t = time.perf_counter()
        log = dict(getattr(trainer, "sgld_log", {}))
        # the pass draws from the global stream too (a model's left-out sites): forked,
        # so a validated run trains on exactly the episodes of an unvalidated one
        with torch.random.fork_rng(devices=[params[0].device] if on_cuda else []):
            res = evaluate(trainer, task, val, torch.Generator().manual_seed(VAL_SEED))
        if log:
            trainer.sgld_log = log
        score = res[select]
        best["val_curve"].append((step, score))
        # a diverged checkpoint (non-finite score) never wins; equal errors (common on a
        # few classification episodes) go to the better-calibrated checkpoint
        nll = res.get("nll", math.inf)
        tie = select == "err" and score == best["val_err"] and nll < best["val_nll"]
        if math.isfinite(score) and (score < best[f"val_{select}"] or tie):
            best.update(val_err=res["err"], val_nll=res["nll"], best_step=step,
                        state=[q.detach().clone() for q in params])
        sync()
        val_s += time.perf_counter() - t

    sync()
    t0 = time.perf_counter()
    for s in range(steps):
        eps = split(src.sample(batch, "train", generator))
        history.append(trainer.step(task, eps, generator))
        if progress and (s % every == 0 or s == steps - 1):
            print(f"meta step {s + 1}/{steps}  loss {history[-1]:.4g}", file=sys.stderr)
        if val and ((val_every and (s + 1) % val_every == 0) or s == steps - 1):
            validate(s + 1)
    sync()
    saved_state = best.pop("state", None)
    if saved_state is not None:
        with torch.no_grad():
            for q, saved in zip(params, saved_state, strict=True):
                q.copy_(saved)
    elif val:  # no finite validation score: the last state is kept, and said so
        best.update(best_step=steps, val_err=float("nan"), val_nll=float("nan"))
        warnings.warn(f"meta-validation: no checkpoint had a finite {select}; the last "
                      "state is kept", RuntimeWarning, stacklevel=2)
    wall = time.perf_counter() - t0 - val_s
    sgld = dict(getattr(trainer, "sgld_log", {}))   # before the memory episode adds a chain
    peak_mb = float("nan")
    if measure_memory:
        peak_mb = episode_peak_mb(trainer, task, split(src.sample(1, "train", generator))[0],
                                  generator)
    return {"history": history, "s_per_episode": wall / (steps * batch), "peak_mb": peak_mb,
            "skipped": getattr(trainer, "skipped", 0), "sgld": sgld,
            **({k: best[k] for k in ("val_err", "val_nll", "best_step", "val_curve")}
               if val else {})}


# ---- the ``meta`` inference method on a BDL model --------------------------------------
class ModelTask:
    """The episode likelihood of a BDL model: the model is traced with the episode's data
    (keys xs, ys, xq, yq replacing the model arguments of those names) and the weights
    site fixed at theta; the support loss is -log p of the site ``ys``, the query loss of
    ``yq``."""

    def __init__(self, model, kwargs, site, kind):
        self.model, self.kwargs, self.site, self.kind = model, kwargs, site, kind
        self._family, self._rows = None, {}

    @property
    def family(self) -> str:
        """The support likelihood's family, read from one trace of the model at its own
        data: "normal" or "categorical" for a ``Normal`` / ``Categorical`` site ``ys``
        (under any ``.to_event``), else the distribution's class name in lower case
        (:func:`auto_precision`)."""
        if self._family is None:
            import pyro
            import torch.distributions as td

            fn = self._pointwise(
                pyro.poutine.trace(self.model).get_trace(**self.kwargs).nodes["ys"]["fn"])
            self._family = ("normal" if isinstance(fn, td.Normal) else "categorical"
                            if isinstance(fn, td.Categorical) else type(fn).__name__.lower())
        return self._family

    def trace(self, theta, ep):
        import pyro

        kw = dict(self.kwargs)
        kw.update(ep)
        cond = pyro.poutine.condition(self.model, data={self.site: theta})
        return pyro.poutine.trace(cond).get_trace(**kw)

    def loss(self, theta, ep, part):
        node = self.trace(theta, ep).nodes["ys" if part == "support" else "yq"]
        return -node["fn"].log_prob(node["value"]).sum()

    def point_nll(self, theta, ep, part):
        """[points]: the NLL of each point (the leading axis of ``ys`` / ``yq``; any
        further axes of a point summed) at theta; :meth:`loss` is their sum."""
        node = self.trace(theta, ep).nodes["ys" if part == "support" else "yq"]
        lp = self._pointwise(node["fn"]).log_prob(node["value"])
        return -(lp.reshape(lp.shape[0], -1).sum(-1) if lp.dim() > 0 else lp.reshape(1))

    def fisher_factor(self, theta, ep, part="support"):
        """U with U^T U the Fisher information of the summed NLL of the site ``ys``
        (support) or ``yq`` at theta, for the likelihoods with a closed-form Fisher:
        Normal(mu, s): rows (d mu_n/d theta)/s_n and sqrt(2) d log s_n/d theta (the
        latter only when s depends on theta; without them the Gauss-Newton matrix);
        Categorical(logits z): :func:`categorical_fisher_factor` (METHODS.md §4: A_i)."""
        return self.fisher_factor_grad(theta, ep, part)[0]

    def fisher_factor_grad(self, theta, ep, part="support"):
        """(U, grad U(theta)) from one trace and one Jacobian, U as :meth:`fisher_factor`
        and the gradient of the summed NLL from the same Jacobian rows: Normal,
        sum_n [(mu_n - y_n)/s_n^2 grad mu_n + (1 - r_n^2) grad log s_n], r_n = (y_n - mu_n)/s_n,
        i.e. U_mu^T (-r) + U_s^T (1 - r^2)/sqrt(2); Categorical, sum_n J_n^T (p_n - onehot y_n).
        No extra backward pass (and the step cap of ``gauss_newton`` can take the Gram
        matrix of this U: :meth:`NIW.chain`)."""
        import torch.distributions as td

        site = "ys" if part == "support" else "yq"
        # one trace with theta as a leaf: every Jacobian below is a backward through it
        th = theta.detach().requires_grad_(True)
        with torch.enable_grad():
            node = self.trace(th, ep).nodes[site]
            fn = self._pointwise(node["fn"])
        y = node["value"].detach()
        d = th.shape[-1]
        if isinstance(fn, td.Normal):
            with torch.enable_grad():
                loc, scale = torch.broadcast_tensors(fn.loc, fn.scale)
                r = ((y - loc) / scale).detach()
                root2 = torch.tensor(2 ** 0.5, dtype=th.dtype, device=th.device)
                outs = [(loc, scale.detach().reciprocal(), -r),
                        (scale.log(), root2, (1 - r ** 2) / root2)]
            outs = [o for o in outs if o[0].requires_grad]
            rows, grad = [], th.new_zeros(d)
            for i, (out, weight, resid) in enumerate(outs):
                jac = _jacobian_of(out, th, retain_graph=i < len(outs) - 1)
                u = (torch.broadcast_to(weight, jac.shape[:-1])[..., None] * jac).reshape(-1, d)
                rows.append(u)
                grad = grad + u.transpose(-1, -2) @ resid.reshape(-1)
            return (torch.cat(rows) if rows else th.new_zeros(1, d)), grad
        if isinstance(fn, td.Categorical):
            with torch.enable_grad():  # logits may be a lazy property of probs
                logits = fn.logits
            jac = _jacobian_of(logits, th).reshape(-1, logits.shape[-1], d)
            p = fn.probs.detach().reshape(-1, logits.shape[-1])
            onehot = torch.nn.functional.one_hot(y.reshape(-1).long(), p.shape[-1])
            grad = torch.einsum("nc,ncd->d", p - onehot.to(p.dtype), jac)
            return categorical_fisher_factor(jac, p), grad
        raise ValueError(f"sgld_precision 'fisher'/'newton'/'gauss_newton' needs a Normal or "
                         f"Categorical likelihood for '{site}', not {type(fn).__name__}; use "
                         f"sgld_precision=\"variance\"")

    def factor_rows(self, ep, part="support"):
        """Rows of :meth:`fisher_factor` (the step cap's choice in :meth:`NIW.chain`),
        from one factor per data shape, remembered."""
        import pyro

        site = "ys" if part == "support" else "yq"
        key = (site, tuple(ep[site].shape))
        if key not in self._rows:
            theta = pyro.poutine.trace(self.model).get_trace(**self.kwargs).nodes[self.site]
            # a shape probe at the prior's draw, in the episode's floating dtype: the site's
            # stored m0 may come from an earlier run in another dtype (float32 m0 against
            # float64 data failed in the factor's products)
            dtype = next((v.dtype for v in ep.values()
                          if torch.is_tensor(v) and v.is_floating_point()), None)
            value = theta["value"].detach()
            self._rows[key] = self.fisher_factor(value if dtype is None else value.to(dtype),
                                                 ep, part).shape[0]
        return self._rows[key]

    @staticmethod
    def _pointwise(fn):
        """The per-point distribution under ``.to_event`` (Independent) wrappers."""
        import torch.distributions as td

        while isinstance(fn, td.Independent):
            fn = fn.base_dist
        return fn

    def metrics(self, thetas, ep):
        logps, means = [], []
        scales = []
        for th in thetas:
            node = self.trace(th, ep).nodes["yq"]
            fn = self._pointwise(node["fn"])
            lp = fn.log_prob(node["value"])
            # one number per query point: a point's coordinates [P, D] belong together
            logps.append(lp.reshape(lp.shape[0], -1).sum(-1) if lp.dim() > 1 else lp)
            means.append(fn.probs if self.kind == "classification" else fn.mean)
            if self.kind != "classification":
                scales.append(fn.stddev)
        logp = torch.logsumexp(torch.stack(logps), 0) - math.log(len(logps))
        mean = torch.stack(means).mean(0)
        y = ep["yq"]
        out = {"nll": float(-logp.mean())}
        if self.kind == "classification":
            conf, pred = mean.max(-1)
            correct = (pred == y).to(mean.dtype)
            out.update(err=float(1 - correct.mean()), conf=conf, correct=correct)
        else:
            out["err"] = float(((mean - y) ** 2).mean())
            loc, scale = torch.stack(means), torch.stack(scales)
            out["pit"] = torch.distributions.Normal(loc, scale).cdf(y).mean(0)
        return out


def _user_error(message: str, notes: list[str] | None = None):
    """A user error of the ``meta`` runner (exit status 1 from the CLI, not an internal
    error): the model, its data or the episode source do not fit together."""
    from ..syntax.diagnostics import BdlError, Diagnostic

    return BdlError([Diagnostic(message, notes=notes or [])], "infer")


def _check_model(kwargs):
    for k in ("xs", "ys", "xq", "yq"):
        if k not in kwargs:
            raise _user_error(f"infer meta needs a model whose data declares xs, ys (support "
                              f"set) and xq, yq (query set); this model has no '{k}'",
                              ["e.g. model M(xs: real[S, 1], ys: real[S], xq: real[Q, 1], "
                               "yq: real[Q])"])
        if kwargs[k] is None:
            raise _user_error("infer meta needs the model's data arguments xs, ys (support) "
                              f"and xq, yq (query); '{k}' is missing from the data")


#: the arrays an episodes ``.npz`` file holds (:class:`ppl.runtime.niw_meta.NpzEpisodes`)
EPISODE_ARRAYS = tuple(f"{s}_{k}" for s in ("train", "test") for k in ("xs", "ys", "xq", "yq"))


def _episodes_error(episodes, message: str, notes: list[str] | None = None):
    """``message`` as a user error at the ``episodes=`` option of the model file when it
    was written there (:class:`ppl.constructs.niw_meta.EpisodesFile`), else unlocated."""
    from .methods import SITE
    from .np_meta import _task_source_error

    at = getattr(episodes, "at", None)
    _task_source_error({SITE: {"at": at}} if at else {}, message, notes)


def episodes_path(episodes) -> str:
    """The file an ``episodes`` option reads (a built-in source name is returned as it
    is): a ``.npz`` path written in a model file is relative to the model file's folder
    (as ``np_train``'s ``task_file``; no fall-back to the working directory), one given
    from Python or ``--infer`` to the working directory. A missing file, or one that is
    not an ``.npz`` of the episode arrays (:data:`EPISODE_ARRAYS`), is a user error naming
    the file and what it lacks."""
    import numpy as np

    if not episodes.endswith(".npz"):
        return episodes
    anchored = getattr(episodes, "file", None)
    path = anchored or str(episodes)
    if not Path(path).is_file():
        where = ("a path in a model file is relative to the model file's folder"
                 if anchored else "relative to the current directory")
        _episodes_error(episodes, f"option 'episodes' of meta: no file {str(episodes)!r} "
                                  f"(looked for {str(Path(path).absolute())!r}; {where})")
    try:
        z = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        why = "it holds pickled Python objects" if "pickle" in str(e) else str(e)
        _episodes_error(episodes, f"option 'episodes' of meta: {path} is not an episodes "
                                  f"file (an .npz of numeric arrays): {why}")
    files = list(getattr(z, "files", []))
    try:
        missing = [k for k in EPISODE_ARRAYS if k not in files]
        if missing:
            _episodes_error(episodes, f"option 'episodes' of meta: {path} lacks arrays "
                                      f"{', '.join(missing)}",
                            [f"an episodes file holds {', '.join(EPISODE_ARRAYS)}, each "
                             f"[episodes, points, ...] (it has {', '.join(files) or 'none'})"])
        for k in EPISODE_ARRAYS:
            try:
                kind = z[k].dtype.kind
            except ValueError:  # an object array, refused without allow_pickle
                kind = "O"
            if kind not in "biuf":
                _episodes_error(episodes, f"option 'episodes' of meta: array {k} of {path} "
                                          "must be numeric"
                                          + (" (it holds pickled Python objects)"
                                             if kind == "O" else ""))
    finally:
        if hasattr(z, "close"):
            z.close()
    return path


def _size_mismatch(episodes, k: str, probe: dict, kwargs: dict) -> tuple[str, list[str]]:
    """(message, notes) for episodes whose support or query set has another number of
    points than the data's (``k``: the first array that differs). sine_line episodes
    split 50 points: the data's support size (xs) sets the shots, the rest are queries."""
    s_ep, q_ep = probe["xs"].shape[1], probe["xq"].shape[1]
    s_data, q_data = kwargs["xs"].shape[0], kwargs["xq"].shape[0]
    if episodes == "sine_line" and k in ("xq", "yq"):
        total = s_ep + q_ep
        return (f"sine_line episodes have {total} points, split into the support set and "
                f"the query set: the data's support size (xs: {s_data} points) leaves "
                f"{q_ep} query points, but the data's {k} has {q_data}",
                [f"the support and query sets of the data add up to {total}: with xs of "
                 f"{s_data} points, xq and yq have {total - s_data}; with xq of {q_data}, "
                 f"xs and ys have {total - q_data}"])
    if k in ("xs", "ys"):
        return (f"the support size differs: episodes '{episodes}' have {s_ep} support "
                f"points, the data's {k} has {kwargs[k].shape[0]}",
                ["give the model's support set (xs, ys) the episodes' size"])
    return (f"the query size differs: episodes '{episodes}' have {q_ep} query points, "
            f"the data's {k} has {q_data}",
            ["give the model's query set (xq, yq) the episodes' size"])


#: the seed of infer meta's validation episodes is this plus the fit's seed (the same
#: offset as benchmarks/fewshot.py's validation episodes)
VAL_EPISODE_SEED = 20_000


def _check_validation(opts) -> int:
    """The number of validation episodes; a user error for a validation option given
    without ``val_episodes`` (it would be silently ignored), ``val_classes`` with a
    source that has no classes, or ``rotations`` other than 1 to 4 or for a source other
    than digits."""
    n_val = opts["val_episodes"]
    if not n_val:
        for key in ("val_every", "select", "val_classes", "val_fraction"):
            if opts[key] != META_OPTIONS[key].default:  # the table's default: not given
                raise _user_error(f"option '{key}' of meta needs val_episodes > 0 (the "
                                  "meta-validation episodes it applies to)")
    elif opts["val_classes"] and opts["episodes"] not in ("digits", "gauss"):
        raise _user_error(f"option 'val_classes' of meta: episodes '{opts['episodes']}' have "
                          "no classes to hold out",
                          ["use val_fraction (.npz: the last train episodes; sine_line: "
                           "validation episodes are other draws and need neither)"])
    if opts["rotations"] != 1 and opts["episodes"] != "digits":
        raise _user_error(f"option 'rotations' of meta: episodes '{opts['episodes']}' have no "
                          "images to rotate (rotated classes are for episodes=\"digits\")")
    if opts["rotations"] > 4:
        raise _user_error(f"option 'rotations' of meta: at most 4 quarter turns, got "
                          f"{opts['rotations']}")
    return n_val


def run(model, kwargs, opts, progress=False):
    """The ``meta`` runner: meta-train the single ``f ~ niw_meta(...)`` of the model on
    episodes from ``opts['episodes']``, evaluate on meta-test episodes, then adapt to the
    support set of the data given (xs, ys) and return ``samples`` draws of the weights
    from q*. ``fit.meta`` holds the learned globals, the loss history and the meta-test
    metrics. With ``val_episodes`` > 0 the checkpoint with the lowest validation score
    (``select``) on that many fixed episodes of the source's held-out "val" split (never
    "test") is kept, as in :func:`meta_train`; ``fit.meta`` then adds ``best_step``,
    ``val_err``, ``val_nll`` (at the kept checkpoint), ``val_curve`` and ``select``."""
    import pyro

    from ..constructs.niw_meta import episodes_problem
    from .fit import Fit

    _check_model(kwargs)
    problem = episodes_problem(opts["episodes"])
    if problem:
        raise _user_error(f"option 'episodes' of meta: {problem}")
    rtn.SITES.clear()
    tr = pyro.poutine.trace(model).get_trace(**kwargs)
    names = [n for n in tr.nodes if n in rtn.SITES]
    if len(names) != 1:
        raise _user_error("infer meta needs exactly one 'f ~ niw_meta(...)' in the model, "
                          f"found {len(names)}")
    name = names[0]
    cfg = rtn.SITES[name]
    o = cfg.options
    ys = kwargs["ys"]
    classify = not torch.is_floating_point(ys)
    ways = int(ys.max()) + 1 if classify else 0
    shots = ys.shape[0] // ways if classify else ys.shape[0]
    queries = kwargs["yq"].shape[0] // ways if classify else kwargs["yq"].shape[0]
    where = episodes_path(opts["episodes"])
    n_val = _check_validation(opts)
    try:
        src = rtn.source(where, shots=shots, ways=max(ways, 1), queries=queries,
                         val_fraction=opts["val_fraction"] if n_val else 0.0,
                         val_classes=opts["val_classes"] if n_val else 0,
                         rotations=opts["rotations"])
    except ValueError as e:
        if not n_val:
            raise
        # the split the options ask for does not fit the source (too few classes,
        # points or episodes): the options' error, not an internal one
        which = "val_classes" if opts["val_classes"] else "val_fraction"
        raise _user_error(f"option '{which}' of meta: {e}") from None
    probe = src.sample(1, "train")
    if probe["ys"].is_floating_point() != (not classify):
        want, got = (("classification", "integer labels") if classify
                     else ("regression", "real ys"))
        raise _user_error(
            f"episodes '{opts['episodes']}' are {src.kind} episodes, but the model's data "
            f"is {want} ({got})",
            [("classification episodes (digits, gauss) need integer labels ys: int[S], "
              "yq: int[Q] and a Categorical likelihood") if src.kind == "classification"
             else ("regression episodes (sine_line) need real ys: real[S], yq: real[Q]; "
                   "for classification use episodes=\"digits\" or \"gauss\"")])
    for k in ("xs", "ys", "xq", "yq"):
        got, want = tuple(probe[k].shape[1:]), tuple(kwargs[k].shape)
        if got[1:] == want[1:] and got[:1] != want[:1]:
            raise _user_error(*_size_mismatch(opts["episodes"], k, probe, kwargs))
        if got != want:
            raise _user_error(
                f"episodes '{opts['episodes']}' give {k} of shape "
                f"{tuple(probe[k].shape[1:])}, the model's data has {tuple(kwargs[k].shape)}",
                ["declare the model's data with the episodes' shapes (sine_line: xs "
                 "real[S, 1]; digits: xs real[S, 64]; a .npz file: its arrays' shapes "
                 "after the episode axis)"])
    device = kwargs["xs"].device

    def to_dev(b):
        return {k: v.to(device) for k, v in b.items()}

    class _Src:
        kind = src.kind

        def sample(self, n, split_="train", generator=None):
            return to_dev(src.sample(n, split_, generator))

    task = ModelTask(model, kwargs, name, src.kind)
    # N of the hyperprior's KL / N: the meta-training episodes unless the user sets it
    kl_episodes = opts["kl_episodes"] or opts["steps"] * opts["batch"]
    trainer = NIW(cfg.flat.vector().to(device), n0=o["n0"], gamma0=o["gamma0"], l0=o["l0"],
                  sgld_steps=o["sgld_steps"], sgld_lr=o["sgld_lr"], sgld_temp=o["sgld_temp"],
                  a_max=o["a_max"], sgld_burn=o["sgld_burn"],
                  sgld_power_iters=o["sgld_power_iters"],
                  sgld_precision=o["sgld_precision"], variant=opts["variant"],
                  lr=opts["lr"],
                  lr_hyper=opts["lr_hyper"], kl_episodes=kl_episodes,
                  test_samples=opts["test_samples"], query_draws=o["query_draws"],
                  query_mix=o["query_mix"])
    val = None
    if n_val:
        # fixed episodes of the held-out "val" split (never "test"), drawn by their own
        # generator so that they neither replay nor shift the training stream
        val = split(_Src().sample(n_val, "val",
                                  torch.Generator().manual_seed(VAL_EPISODE_SEED
                                                                + opts["seed"])))
    info = meta_train(trainer, task, _Src(), steps=opts["steps"], batch=opts["batch"],
                      progress=progress, measure_memory=False, val=val,
                      val_every=opts["val_every"] or max(1, opts["steps"] // 10),
                      select=opts["select"])
    if n_val:
        info.update(select=opts["select"], val_episodes=n_val)
        if progress:
            print(f"meta-validation ({n_val} episodes, by {opts['select']}): kept step "
                  f"{info['best_step']}/{opts['steps']}, val err {info['val_err']:.4g}, "
                  f"val nll {info['val_nll']:.4g}", file=sys.stderr)
    test = split(_Src().sample(opts["test_episodes"], "test"))
    info["test"] = evaluate(trainer, task, test)
    m0, gamma0, n0, l0 = (x.detach() for x in trainer.globals())
    cfg.state = {"m0": m0, "gamma0": gamma0, "n0": float(n0), "l0": float(l0)}
    data_ep = {k: kwargs[k] for k in ("xs", "ys", "xq", "yq")}
    draws = trainer.draws(task, data_ep, n=opts["samples"])
    fit = Fit(model, kwargs, chains={name: draws[None]}, latents=[name], deterministics=[])
    info.update(m0=m0, gamma0=gamma0, n0=float(n0), l0=float(l0),
                sgld_precision=trainer.precision, kl_episodes=float(kl_episodes))
    fit.meta = info
    return fit
