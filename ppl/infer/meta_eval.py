"""Meta-training and its evaluation (METHODS.md §4; docs/constructs/niw_meta.md,
"Harness and baselines").

:func:`meta_train`: ``steps`` updates of a trainer (:mod:`ppl.infer.meta_trainers`), each
on a meta-batch of fresh meta-train episodes; optionally every ``val_every`` steps a score
on held-out meta-validation episodes, keeping the checkpoint with the lowest one.

:func:`evaluate` on meta-test episodes: the query error (MSE, or 1 - accuracy) with a 95%
interval 1.96 s / sqrt(n) over the n episodes; the predictive NLL per query point,
-log (1/S) sum_s p(y | theta_s) over the S draws of the adapted weights; and the ECE
(:func:`calibration`) -- classification: 15 equal-width confidence bins,
sum_b |acc_b - conf_b| n_b / n; regression: the quantile calibration error, the mean over
p = 0.05, ..., 0.95 of |P(F(y) <= p) - p| (F the predictive CDF) -- with a bootstrap
interval over whole episodes (:func:`ece_interval`).

:func:`episode_peak_mb`: the peak memory of one episode's meta-gradient, the tensors
autograd saves for backward (:class:`SavedTensorMeter`: what MAML's unrolled inner loop
grows and NIW's one-time update does not), or the CUDA allocator's peak.
"""

from __future__ import annotations

import math
import sys
import time
import warnings

import torch

# SELECT: the validation scores by which meta_train keeps a checkpoint, and infer meta
# and fewshot.py choose (one list for the checker and the learner)
from ..constructs.niw_meta import SELECT
from .meta_trainers import can_batch, split


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
    episode by episode: :meth:`ppl.infer.meta_trainers.NIW.chains`). ``intervals``: also
    ``nll_ci`` (1.96 times the standard error of the per-episode NLLs) and ``ece_ci``
    (:func:`ece_interval`)."""
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
