"""Milliseconds and peak memory per meta-training episode, in isolation: NIW (METHODS.md
§4; the variance and Gauss-Newton local updates) against first- and second-order MAML on
the harness of :mod:`ppl.infer.meta_trainers`, at several inner-step counts.

    python benchmarks/fewshot_speed.py --task sine_line --inner 1,3,10 --json out.json

One timed unit is one meta step (``trainer.step``) on a fixed batch of ``--batch``
meta-train episodes; a block is ``--steps`` such steps; the reported number is the
minimum over ``--blocks`` blocks, divided by the batch (the minimum is the least
disturbed by other processes on a shared machine); ``--rounds R`` repeats the whole sweep
R times, methods alternating, and keeps each row's minimum over the rounds.
``peak_mb``: the peak MB of one episode's meta-gradient
(:func:`ppl.infer.meta_eval.episode_peak_mb`: tensors saved for backward; on CUDA the
allocator's peak). Rows ``METHOD/kSTEPS``, columns
``ms_per_episode``, ``peak_mb``. Methods: niw (``sgld_precision="variance"``), niw_auto
(``"auto"``: gauss_newton on regression, variance on the prototype likelihood), niw_gn
(``"gauss_newton"``, default step cap), niw_gn_power (``"gauss_newton"``, step cap by
power iteration), niw_nocap (variance, no step cap: ``sgld_power_iters=0`` -- a
diagnostic of what the cap costs, not a safe setting), niw_p3 / niw_auto_p3 (niw /
niw_auto with the step cap before stop 25: 3 power iterations, the plain power
estimate, where the default is 2 read by Rayleigh-Ritz), maml1 (first order), maml2
(second order), protonet (no inner loop: one row ``protonet/k0``). A method name
ending in ``_loop`` (``niw_auto_loop``, ``maml1_loop``) evaluates the meta-batch's
episodes one at a time instead of as one batched pass (the trainers' ``batched=False``):
the same maths and draws, the reference for the batching's saving.

Network size (the same network for every method, :func:`fewshot.make_task`): ``--hidden``
sets the MLP's hidden widths (default 2x32 on sine/line, 64 for the embedding), ``--conv C``
replaces the embedding by a Conv-4-style one of C channels on 8x8 digits
(``--conv-blocks``, default 3 blocks of 3x3 convolution, ReLU and 2x2 pooling). The
tiny default networks time the methods' fixed per-episode costs; the larger ones time
them where the network's own compute per inner step dominates, which is where NIW's
claim (k first-order steps and a closed form, no unrolled graph) applies.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import torch
from fewshot import add_network_args, make_task, network_args

from ppl.infer import meta_eval as EV
from ppl.infer import meta_trainers as TR
from ppl.runtime import niw_meta as rtn

NIW_KW = {"niw": {"sgld_precision": "variance"},
          "niw_auto": {"sgld_precision": "auto"},
          "niw_gn": {"sgld_precision": "gauss_newton"},
          "niw_gn_power": {"sgld_precision": "gauss_newton", "sgld_cap": "power"},
          "niw_nocap": {"sgld_precision": "variance", "sgld_power_iters": 0},
          # the step cap before stop 25 (3 plain power iterations), beside the defaults
          "niw_auto_p3": {"sgld_precision": "auto", "sgld_power_iters": 3,
                          "sgld_power_ritz": False},
          "niw_p3": {"sgld_precision": "variance", "sgld_power_iters": 3,
                     "sgld_power_ritz": False}}


def make(method: str, task, k: int, inner_lr: float):
    """A trainer of ``method`` with ``k`` inner steps at the network's initial weights."""
    theta = task.flat.vector()
    batched = not method.endswith("_loop")
    method = method.removesuffix("_loop")
    if method in NIW_KW:
        return TR.NIW(theta, sgld_steps=k, sgld_lr=inner_lr, batched=batched,
                      **NIW_KW[method])
    if method in ("maml1", "maml2"):
        return TR.MAML(theta, inner_steps=k, inner_lr=inner_lr, first_order=method == "maml1",
                       batched=batched)
    if method == "protonet":
        return TR.Plain(theta, batched=batched)
    raise SystemExit(f"unknown method {method!r}")


def ms_per_episode(trainer, task, batch, steps: int, blocks: int, sync) -> float:
    """min over ``blocks`` of the wall time of ``steps`` meta steps, per episode, in ms."""
    trainer.step(task, batch)  # warm-up
    best = float("inf")
    for _ in range(blocks):
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.step(task, batch)
        sync()
        best = min(best, (time.perf_counter() - t0) / steps)
    return 1e3 * best / len(batch)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="sine_line", help="sine_line | digits | gauss | FILE.npz")
    p.add_argument("--methods", default="niw,niw_gn,niw_gn_power,maml1,maml2")
    p.add_argument("--shots", type=int, default=5)
    p.add_argument("--inner", default="1,3,10", help="inner steps, comma list")
    p.add_argument("--batch", type=int, default=4, help="episodes per meta step")
    p.add_argument("--steps", type=int, default=20, help="meta steps per timed block")
    p.add_argument("--blocks", type=int, default=5, help="timed blocks (the minimum is kept)")
    p.add_argument("--rounds", type=int, default=1,
                   help="repeat the whole sweep of methods and k this many times, "
                        "alternating them, and keep each row's minimum: on a loaded "
                        "machine every method then meets the same disturbances")
    p.add_argument("--inner-lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=0)
    add_network_args(p)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available on this machine")
    dev = torch.device(args.device)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    src = rtn.source(args.task, shots=args.shots)
    batch = [{k: v.to(dev) for k, v in ep.items()} for ep in TR.split(
        src.sample(args.batch, "train", torch.Generator().manual_seed(args.seed)))]
    rows = {}
    for _ in range(max(args.rounds, 1)):
        for method in args.methods.split(","):
            # ProtoNet has no inner loop: one row, k0
            inner = ([0] if method.removesuffix("_loop") == "protonet"
                     else args.inner.split(","))
            for k in (int(s) for s in inner):
                task = make_task(src, args.seed, **network_args(args))
                task.flat.net.to(dev)
                trainer = make(method, task, k, args.inner_lr)
                ms = ms_per_episode(trainer, task, batch, args.steps, args.blocks, sync)
                row = f"{method}/k{k}"
                if row in rows:  # a later round: the minimum; peak MB is deterministic
                    rows[row]["ms_per_episode"] = min(rows[row]["ms_per_episode"], ms)
                    continue
                mb = EV.episode_peak_mb(trainer, task, batch[0],
                                        torch.Generator().manual_seed(args.seed))
                rows[row] = {"ms_per_episode": ms, "peak_mb": mb}
    print("| row | ms_per_episode | peak_mb |\n|---|---|---|")
    for row, v in rows.items():
        print(f"| {row} | {v['ms_per_episode']:.2f} | {v['peak_mb']:.3f} |")
    print(f"# {args.task}, network of d = {task.flat.d} weights, "
          f"{platform.processor() or platform.machine()}, torch "
          f"{torch.__version__}, device {args.device}, threads {torch.get_num_threads()}",
          file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
