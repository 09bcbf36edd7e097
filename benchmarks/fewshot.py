"""Few-shot benchmark: NIW hierarchical meta-learning (Kim & Hospedales 2024;
METHODS.md §4) against MAML (first/second order) and ProtoNet in one harness
(:mod:`ppl.infer.meta_trainers`, :mod:`ppl.infer.meta_eval`), with the two NIW ablations.

    python benchmarks/fewshot.py --task sine_line --methods niw,no_adapt,maml1,maml2 \
        --inner 1,3,10 --episodes 1600 --json out.json

Every method sees the same meta-training episodes (same seed, same number: --episodes,
in steps of --batch), the same network initialisation and the same Adam learning rate,
and is scored on the same meta-test episodes. Regression (sine_line, or a .npz with real
ys): net 2x32 ReLU, Gaussian likelihood with sd 0.3; classification (digits, gauss, or a
.npz with integer ys): an embedding MLP in -> 64 -> 32 (ReLU) with the prototype
likelihood for every method (ProtoNet is that likelihood with no adaptation).

Columns per row ``TASK/Kshot/METHOD[/kSTEPS]``: err (query MSE, or classification error
rate = 1 - accuracy) with err_ci (95% interval half-width over meta-test episodes), nll
(per query point, predictive averaged over draws), ece (classification: 15-bin ECE;
regression: quantile calibration error of the predictive), s_per_episode (meta-training
wall seconds per episode), peak_mb (peak MB of tensors autograd keeps for backward in one
episode's meta-gradient -- on CUDA the allocator's peak instead).

Methods: niw (local update --sgld-precision; the default "auto" is gauss_newton on
regression, variance on the prototype likelihood), niw_gn (niw with the gauss_newton update),
no_adapt (gamma0 frozen at 1e6), no_share (n0 gamma0 -> 0), maml1 (first order), maml2
(second order), protonet. --inner sets the SGLD / MAML inner steps.

Meta-validation (--val-episodes N): N fixed episodes held out of meta-train (classes: a
part of each meta-train class's points, or with --val-classes whole meta-train classes;
.npz: the last train episodes; sine/line: other draws), scored every --val-every meta
steps; each method keeps its checkpoint with the lowest validation score, and with a
comma list --lr the learning rate whose best checkpoint is lowest -- one rule for every
method. The NIW methods' --lr-hyper (Adam lr of log gamma0, log n0, log l0) may be a comma
list too: it is searched jointly with --lr (every pair, the same rule), since the learned
prior precision n0 gamma0 -- the width of q_i* -- is set by lr_hyper times the number of
meta steps (benchmarks/RESULTS.md, Issue 7, twelfth slice); so may --sgld-temp (the SGLD
temperature: a colder chain estimates the centre mbar_i with less injected noise, which
otherwise dominates m0's meta-gradient; fifteenth slice) and --kl-episodes (N of the
hyperprior's KL / N), every combination a full run. The score (--select) is the
validation error ("err", the default) or the validation NLL per query point ("nll": a
proper scoring rule, which rewards calibration), for every method alike. Rows then add
lr, val_err, val_nll, best_episode (meta-training episodes at the kept checkpoint) and,
for NIW methods, lr_hyper, sgld_temp (and kl_episodes where --kl-episodes is given).

Rotated classes (digits, --rotations R): each meta-train digit 0-4 at the first R quarter
turns is its own class (Omniglot practice), meta-test stays the unrotated digits 5-9 (the
same episodes as without). With R = 4 there are 20 meta-train classes, so --val-classes 8
(a multiple of R) holds out digits 3 and 4 at all four rotations: class-level validation
on novel classes, as at meta-test, never a rotation of a trained digit.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import platform
import sys
import time

import torch

from ppl.constructs.niw_meta import QUERY_MIXES, SELECT
from ppl.infer import meta_eval as EV
from ppl.infer import meta_tasks as TK
from ppl.infer import meta_trainers as TR
from ppl.runtime import niw_meta as rtn
from ppl.runtime.nn import CNN, MLP

NIW_METHODS = {"niw", "niw_gn", "no_adapt", "no_share"}
INNER = NIW_METHODS | {"maml1", "maml2"}


def make_task(src, seed: int, hidden: list[int] | None = None, conv: int = 0,
              conv_blocks: int = 3):
    """The benchmark's episode likelihood at its initial weights (seeded): regression a
    ReLU MLP 1 -> ``hidden`` -> 1 (default 2x32) with a Gaussian likelihood;
    classification an embedding MLP in -> ``hidden`` -> 32 (default in -> 64 -> 32, ReLU)
    with the prototype likelihood, or with ``conv`` = C > 0 on square images (8x8
    digits) the Conv-4-style embedding of :func:`conv_embedding`. Shared by
    fewshot_speed.py; the same network for every method."""
    torch.manual_seed(seed)
    if src.kind == "regression":
        if conv:
            raise SystemExit("--conv: a convolutional embedding needs an image task (digits)")
        return TK.RegressionTask(MLP(1, hidden or [32, 32], 1, act="relu"))
    dim = src.sample(1)["xs"].shape[-1]
    if conv:
        return TK.ProtoTask(conv_embedding(dim, conv, conv_blocks), src.ways)
    return TK.ProtoTask(MLP(dim, hidden or [64], 32, act="relu"), src.ways)


def conv_embedding(dim: int, channels: int, blocks: int = 3) -> torch.nn.Module:
    """The few-shot classifiers' Conv-4 embedding (Vinyals et al. 2016, Snell et al.
    2017: blocks of 3x3 convolution, ReLU and 2x2 max-pooling) shrunk to a side x side
    image given as a flat vector of ``dim`` = side^2 pixels: ``blocks`` blocks of
    ``channels`` channels (pooling by 2 while the image stays at least 1 pixel wide, so
    3 blocks on 8x8; otherwise no pooling), then a linear map to a ``channels``-dim
    embedding (:class:`ppl.runtime.nn.CNN`). No batch norm: its running statistics are
    not weights of the flat vector."""
    side = math.isqrt(dim)
    if side * side != dim:
        raise SystemExit(f"--conv: inputs of {dim} features are not a square image")
    pool = 2 if side >> blocks >= 1 else 1
    return torch.nn.Sequential(torch.nn.Unflatten(-1, (1, side, side)),
                               CNN((1, side, side), [channels] * blocks, channels,
                                   act="relu", pool=pool))


def add_network_args(p: argparse.ArgumentParser) -> None:
    """The network-size options of fewshot.py and fewshot_speed.py (:func:`make_task`)."""
    p.add_argument("--hidden", default=None,
                   help="network size: hidden widths, comma list (default 32,32 for "
                        "regression, 64 for the classification embedding)")
    p.add_argument("--conv", type=int, default=0,
                   help="classification on images: a Conv-4-style embedding of this many "
                        "channels instead of the MLP (0: the MLP)")
    p.add_argument("--conv-blocks", type=int, default=3, help="--conv: convolution blocks")


def network_args(args) -> dict:
    """:func:`make_task`'s keyword arguments from the options of :func:`add_network_args`."""
    return {"hidden": [int(v) for v in args.hidden.split(",")] if args.hidden else None,
            "conv": args.conv, "conv_blocks": args.conv_blocks}


def _positive_list(p, flag: str, text: str, zero: bool = False) -> list[float]:
    """A comma list of positive numbers (``zero``: non-negative), or the parser's error
    (exit 2) naming ``flag``."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        p.error(f"{flag} takes a comma list of numbers, got {text!r}")
    if not all(v > 0 or (zero and v == 0) for v in values):
        what = "non-negative numbers" if zero else "positive numbers"
        p.error(f"{flag} takes {what}, got {text!r}")
    return values


def make_trainer(method, theta, steps, args, n_episodes, lr, lr_hyper=0.1, sgld_temp=1.0,
                 kl_episodes=None):
    """The trainer of ``method`` at one grid point (lr; for the NIW methods lr_hyper, the
    SGLD temperature and N of the hyperprior's KL / N, None: the number of meta-training
    episodes ``n_episodes``)."""
    if method in NIW_METHODS:
        precision = "gauss_newton" if method == "niw_gn" else args.sgld_precision
        return TR.NIW(theta, variant=method if method in ("no_adapt", "no_share") else "niw",
                      sgld_steps=steps,
                      gamma0=1e6 if method == "no_adapt" else args.gamma0,
                      sgld_temp=sgld_temp, sgld_burn=args.sgld_burn, a_max=args.a_max,
                      sgld_detrend=bool(args.sgld_detrend),
                      sgld_power_iters=args.sgld_power_iters,
                      sgld_power_ritz=bool(args.sgld_power_ritz),
                      sgld_step_scale=args.sgld_step_scale,
                      sgld_precision=precision, sgld_cap=args.sgld_cap,
                      sgld_lr=args.inner_lr, lr=lr, lr_hyper=lr_hyper,
                      kl_episodes=kl_episodes or n_episodes,
                      test_samples=args.test_samples, query_draws=args.query_draws,
                      query_mix=args.query_mix)
    if method in ("maml1", "maml2"):
        return TR.MAML(theta, inner_steps=steps, inner_lr=args.inner_lr,
                       first_order=method == "maml1", lr=lr)
    if method == "protonet":
        return TR.Plain(theta, lr=lr)
    raise SystemExit(f"unknown method {method!r}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="sine_line", help="sine_line | digits | gauss | FILE.npz")
    p.add_argument("--methods", default="niw,no_adapt,no_share,maml1,maml2,protonet")
    p.add_argument("--shots", default="5", help="support points per class (regression: "
                                                 "support points), comma list")
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--queries", type=int, default=15, help="query points per class")
    p.add_argument("--inner", default="3", help="inner steps (SGLD / MAML), comma list")
    p.add_argument("--episodes", type=int, default=1600, help="meta-training episodes")
    p.add_argument("--batch", type=int, default=4, help="episodes per meta step")
    p.add_argument("--test-episodes", type=int, default=200)
    p.add_argument("--test-samples", type=int, default=20, help="NIW draws per prediction")
    p.add_argument("--lr", default="5e-3",
                   help="Adam lr of the shared weights; a comma list is searched per "
                        "method and inner-step count on the meta-validation episodes "
                        "(needs --val-episodes)")
    p.add_argument("--lr-hyper", default="0.1",
                   help="Adam lr of NIW's log gamma0, log n0, log l0; a comma list is "
                        "searched jointly with --lr (every pair) on the meta-validation "
                        "episodes (needs --val-episodes; NIW methods only)")
    p.add_argument("--select", default="err", choices=SELECT,
                   help="validation score that picks the checkpoint, --lr and --lr-hyper, "
                        "for every method alike: err (query error) or nll (predictive NLL "
                        "per query point, a proper scoring rule)")
    p.add_argument("--inner-lr", type=float, default=3e-4,
                   help="SGLD step / MAML inner step on the summed support NLL")
    p.add_argument("--gamma0", type=float, default=1e6,
                   help="NIW gamma0 at init (the no_adapt ablation freezes it here)")
    p.add_argument("--sgld-temp", default="1",
                   help="NIW: SGLD temperature tau; a comma list is searched jointly with "
                        "--lr and --lr-hyper on the meta-validation episodes (needs "
                        "--val-episodes)")
    p.add_argument("--a-max", type=float, default=1e3, help="NIW clip of A_i (reference 1e3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-episodes", type=int, default=0,
                   help="meta-validation episodes (0: none): held out of meta-train, never "
                        "the meta-test classes; the checkpoint (and --lr) with the lowest "
                        "validation error is kept, the same rule for every method")
    p.add_argument("--val-every", type=int, default=0,
                   help="meta steps between validation passes (0: 10 passes per run)")
    p.add_argument("--val-fraction", type=float, default=0.25,
                   help="classes / .npz: the part of each meta-train class's points (of "
                        "the train episodes) held out for the validation episodes")
    p.add_argument("--val-classes", type=int, default=0,
                   help="classes: hold out this many meta-train classes as the validation "
                        "classes instead (novel classes, as at meta-test; needs 2 x ways "
                        "meta-train classes); with --rotations R a multiple of R (whole "
                        "digits at all their rotations)")
    p.add_argument("--rotations", type=int, default=1, choices=(1, 2, 3, 4),
                   help="digits: each meta-train digit at the first R quarter turns "
                        "(0/90/180/270 degrees) is its own class; meta-test stays the "
                        "unrotated digits 5-9")
    p.add_argument("--sgld-burn", type=float, default=0.5,
                   help="SGLD iterates t >= burn averaged (1: all but the warm start; "
                        "a fraction 0.5: the second half of the chain)")
    p.add_argument("--sgld-detrend", type=int, default=0, choices=(0, 1),
                   help="1: SGLD variance about each coordinate's linear trend in t")
    p.add_argument("--sgld-power-iters", type=int, default=2,
                   help="NIW: power iterations for the support NLL's top curvature L at m0; "
                        "the SGLD step is min(inner-lr, step-scale/L) (0: fixed inner-lr)")
    p.add_argument("--sgld-power-ritz", type=int, default=1, choices=(0, 1),
                   help="NIW: 1 reads L by Rayleigh-Ritz on the power iteration's probed "
                        "vectors; 0 the plain power estimate (with --sgld-power-iters 3: "
                        "the cap before stop 25)")
    p.add_argument("--sgld-step-scale", type=float, default=1.0,
                   help="NIW: SGLD step cap in units of 1/L (1: Newton step in the stiffest "
                        "direction; Langevin is unstable past 2)")
    p.add_argument("--sgld-precision", default="auto",
                   choices=rtn.PRECISIONS,
                   help="NIW local update (auto: gauss_newton for a Gaussian likelihood, "
                        "variance for the prototype one); variance: "
                        "A_i = tau/variance of the SGLD iterates (METHODS); "
                        "fisher: A_i the Fisher diagonal at the chain mean; newton: that and "
                        "the Newton centre; gauss_newton: the low-rank Gauss-Newton matrix "
                        "and the Newton centre (docs/constructs/niw_meta.md)")
    p.add_argument("--sgld-cap", default="auto", choices=("auto", "power", "gram"),
                   help="NIW gauss_newton: the step cap's curvature from power iterations or "
                        "from the Gauss-Newton Gram matrix at m0 (auto: gram when the Fisher "
                        "factor has at most 8 x power-iters rows)")
    p.add_argument("--kl-episodes", default=None,
                   help="NIW: N in KL(q(phi) || p(phi)) / N (default, or 0 as in the "
                        "language's infer meta(kl_episodes=0): the number of "
                        "meta-training episodes); a comma list is searched jointly with "
                        "--lr, --lr-hyper and --sgld-temp on the meta-validation episodes "
                        "(needs --val-episodes)")
    p.add_argument("--query-draws", type=int, default=1,
                   help="NIW: draws S of q_i* in the query loss (1: METHODS' single draw; "
                        "S > 1: the negative log of the S-draw average likelihood)")
    p.add_argument("--query-mix", default="point", choices=QUERY_MIXES,
                   help="NIW, --query-draws > 1: average per query point or over the "
                        "whole query set")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="where the network, the NIW/MAML parameters and the episodes live")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--looped", action="store_true",
                   help="evaluate a meta-batch's episodes one at a time (the batched "
                        "evaluation's reference; same maths and draws)")
    add_network_args(p)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.sgld_cap == "gram" and args.sgld_precision not in ("gauss_newton", "auto"):
        p.error("--sgld-cap gram needs --sgld-precision gauss_newton")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available on this machine")
    lrs, lr_hypers = (_positive_list(p, flag, text) for flag, text in
                      (("--lr", args.lr), ("--lr-hyper", args.lr_hyper)))
    temps = _positive_list(p, "--sgld-temp", args.sgld_temp, zero=True)
    kls = (_positive_list(p, "--kl-episodes", args.kl_episodes, zero=True)
           if args.kl_episodes else [None])
    for flag, values in (("--lr", lrs), ("--lr-hyper", lr_hypers), ("--sgld-temp", temps),
                         ("--kl-episodes", kls)):
        if len(values) > 1 and not args.val_episodes:
            p.error(f"{flag} with several values needs --val-episodes (it is chosen there)")
    if args.select != "err" and not args.val_episodes:
        p.error("--select needs --val-episodes (it scores the validation episodes)")
    torch.set_default_dtype(getattr(torch, args.dtype))
    dev = torch.device(args.device)
    steps_meta = max(1, args.episodes // args.batch)
    val_every = args.val_every or max(1, steps_meta // 10)
    # 0 is the default N, resolved here so that rows and the grid's lines name the N used
    kls = [v if v is None or v > 0 else steps_meta * args.batch for v in kls]
    rows = {}
    for shots in [int(s) for s in args.shots.split(",")]:
        src = rtn.source(args.task, shots=shots, ways=args.ways, queries=args.queries,
                         val_fraction=args.val_fraction if args.val_episodes else 0.0,
                         val_classes=args.val_classes if args.val_episodes else 0,
                         rotations=args.rotations)
        name = args.task.split("/")[-1]

        def fixed(n, split, seed, src=src):
            return [{k: v.to(dev) for k, v in ep.items()} for ep in TR.split(
                src.sample(n, split, torch.Generator().manual_seed(seed)))]

        test = fixed(args.test_episodes, "test", 10_000 + args.seed)
        val = fixed(args.val_episodes, "val", 20_000 + args.seed) if args.val_episodes else None

        class OnDevice:
            kind = src.kind

            def __init__(self, base):
                self.base = base

            def sample(self, n, split="train", generator=None):
                return {k: v.to(dev) for k, v in self.base.sample(n, split, generator).items()}

        for method in args.methods.split(","):
            if method == "protonet" and src.kind != "classification":
                continue
            for k in ([int(s) for s in args.inner.split(",")] if method in INNER else [0]):
                t0 = time.perf_counter()
                niw = method in NIW_METHODS
                # the NIW methods' own settings are searched with the lr (every
                # combination, one full run each); MAML and ProtoNet search the lr alone
                axes = ({"lr_hyper": lr_hypers, "sgld_temp": temps, "kl_episodes": kls}
                        if niw else {})
                grid = [(lr, dict(zip(axes, c, strict=True)))
                        for lr in lrs for c in itertools.product(*axes.values())]
                best = None
                for lr, hyp in grid:
                    task = make_task(src, args.seed, **network_args(args))
                    task.flat.net.to(dev)
                    trainer = make_trainer(method, task.flat.vector(), k, args,
                                           steps_meta * args.batch, lr, **hyp)
                    trainer.batched = not args.looped
                    gen = torch.Generator().manual_seed(args.seed + 1)
                    torch.manual_seed(args.seed + 1)
                    info = EV.meta_train(trainer, task, OnDevice(src), steps=steps_meta,
                                         batch=args.batch, generator=gen, val=val,
                                         val_every=val_every, select=args.select)
                    if len(grid) > 1:
                        hs = "".join(f" {a} {v:g}" for a, v in hyp.items()
                                     if len(axes[a]) > 1)
                        print(f"  {method}/k{k} lr {lr:g}{hs}: val err {info['val_err']:.4f} "
                              f"nll {info['val_nll']:.4f} "
                              f"at episode {info['best_step'] * args.batch}", flush=True)
                    # the first of equal scores wins; without validation the grid is one point
                    score = info.get(f"val_{args.select}", 0.0)
                    if best is None or score < best[0]:
                        best = (score, lr, hyp, trainer, info, task)
                _, lr, hyp, trainer, info, task = best
                res = EV.evaluate(trainer, task, test, torch.Generator().manual_seed(7),
                                  intervals=True)
                log = getattr(trainer, "sgld_log", None)
                sg = (f"{trainer.precision} sgld capped {log['capped']}/{log['chains']} "
                      f"mean step "
                      f"{log['lr_sum'] / max(log['chains'], 1):.2g}  " if log else "")
                row = f"{name}/{shots}shot/{method}" + (f"/k{k}" if k else "")
                rows[row] = {**res, "s_per_episode": info["s_per_episode"],
                             "peak_mb": info["peak_mb"]}
                vs = ""
                if val:
                    rows[row].update(lr=lr, val_err=info["val_err"], val_nll=info["val_nll"],
                                     best_episode=info["best_step"] * args.batch)
                    hs = ""
                    for a, v in hyp.items():
                        if a != "kl_episodes" or v is not None:
                            rows[row][a] = v
                            hs += f"{a} {v:g} "
                    vs = (f"lr {lr:g} {hs}val {info['val_err']:.4f} nll {info['val_nll']:.4f} "
                          f"best@{info['best_step'] * args.batch}  ")
                print(f"{row:34s} err {res['err']:.4f} ± {res['err_ci']:.4f}  "
                      f"nll {res['nll']:.3f} ± {res['nll_ci']:.3f}  "
                      f"ece {res['ece']:.4f} ± {res['ece_ci']:.4f}  "
                      f"s/ep {info['s_per_episode']:.4f}  peak_mb {info['peak_mb']:.3f}  "
                      f"skipped {info['skipped']}  {vs}{sg}"
                      f"({time.perf_counter() - t0:.0f}s)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"device {args.device}, threads {torch.get_num_threads()}", file=sys.stderr)
    return rows


if __name__ == "__main__":
    main()
