"""Curvature of an episode likelihood for NIW's local update (METHODS.md §4: A_i) and
its SGLD step cap, from a task's Fisher factor U [r, d]: U^T U is the Fisher information
of the summed NLL of an episode's support (or query) points at theta.

* Categorical points with logits' Jacobians J_n [C, d] and probabilities p_n:
  U^T U = sum_n J_n^T (diag p_n - p_n p_n^T) J_n, factored as U_n = (I - q q^T) D J_n with
  D = diag sqrt(p_n), q = sqrt(p_n) (:func:`categorical_fisher_factor`).
* The Fisher diagonal diag(U^T U) (:func:`fisher_diag`), floored at 1e-4 for
  ``sgld_precision`` "fisher" and "newton" (an exact curvature, not clipped at a_max).
* The factor with the gradient of the summed NLL from one Jacobian where the task gives
  both (``fisher_factor_grad``), else the factor and one autograd gradient; for a
  meta-batch as [B, r, d] and [B, d] (:func:`factor_and_grad_rows`). Jacobians are one
  batched backward over the rows of the identity.
* The top eigenvalue of the Gauss-Newton matrix U^T U [d, d] as that of the Gram matrix
  U U^T [r, r] (the same non-zero spectrum): the stable-step curvature of
  ``sgld_precision="gauss_newton"`` (:func:`gram_top_eigenvalues`;
  docs/constructs/niw_meta.md, "Step cap from the Gram matrix").

The tasks that give U are in :mod:`ppl.infer.meta_tasks`, the local update that uses it
in :class:`ppl.infer.meta_trainers.NIW`.
"""

from __future__ import annotations

import torch

from ..runtime import niw_meta as rtn


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
    saved-tensor hooks of :class:`ppl.infer.meta_eval.SavedTensorMeter`); with
    ``with_value`` the pair (jacobian, fn(theta) detached) from the same forward pass."""
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
    dimensions (one episode's chain,
    :meth:`ppl.infer.meta_trainers.NIW.chain`)."""
    return float(gram_top_eigenvalues(U).max())


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
