"""Episode likelihoods ("tasks") of meta-training, as functions of the flat weight
vector theta (METHODS.md §4). ``task.loss(theta, ep, part)`` is -log p(D | theta) summed
over the support (``part="support"``) or query (``part="query"``) points of one episode,
``point_nll`` its per-point terms, ``loss_batch`` / ``point_nll_batch`` the same for B
stacked episodes at their own weights theta [B, d], ``metrics(thetas, ep)`` the query
scores of a batch of draws, and ``fisher_factor(theta, ep, part)`` U with U^T U the Fisher
information of the summed NLL (:mod:`ppl.infer.meta_fisher`):

* :class:`RegressionTask`: y ~ N(mu_theta(x), sigma^2); U = J / sigma (J = d mu / d theta),
  the Gauss-Newton matrix, whose diagonal is a ReLU MLP's exact Hessian diagonal.
* :class:`ProtoTask`: embeddings e = f_theta(x), prototypes the mean support embedding per
  class, p(y = c | x) = softmax_c(-||e - proto_c||^2) (ProtoNet); the categorical Fisher
  of the logits.
* :class:`ModelTask`: a BDL model traced with the episode's data and the weights site at
  theta; the sites ``ys`` (support) and ``yq`` (query) are the likelihood, Normal
  (U rows grad mu_n / s_n and sqrt(2) grad log s_n) or Categorical.

Metrics: the query error (MSE of the predictive mean, or 1 - accuracy), the predictive
NLL -log (1/S) sum_s p(y_n | theta_s) per query point, and what the ECE needs (the
top-class confidence and correctness, or the predictive CDF at y).
"""

from __future__ import annotations

import math

import torch

from ..runtime import niw_meta as rtn
from .meta_fisher import _jacobian, _jacobian_of, categorical_fisher_factor


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
        """:meth:`loss` of B stacked episodes ``E``
        (:func:`ppl.infer.meta_trainers.stack_episodes`) at their own
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
        (:func:`ppl.infer.meta_trainers.auto_precision`)."""
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
        matrix of this U: :meth:`ppl.infer.meta_trainers.NIW.chain`)."""
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
        """Rows of :meth:`fisher_factor` (the step cap's choice in
        :meth:`ppl.infer.meta_trainers.NIW.chain`),
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
