"""Monotone DBM on 8x8 digits: joint imputation + classification (METHODS.md §5).

Trains the monotone model (Phi = s(D - A^T A), FB + Anderson, implicit gradients) and two
unconstrained controls on the same units, both with plain parallel mean-field and unrolled
gradients: ``baseline``, the plain RBM of METHODS §5 (Phi = sym(W) on the visible-hidden
and hidden-label blocks only: a restricted Boltzmann machine with the label beside the
visible units, as in a classification RBM; every other block zero), and
``baseline_dense`` (Phi = sym(W) over every pair of distinct units). Data: sklearn's
digits (shipped with the package, no download), pixel intensities in K bins; every model
has the same loss, readout temperatures (``--readout``), seed, optimiser and budget.
Reports, per model, the imputation error (the fraction of hidden pixels whose most
probable bin is wrong) and label accuracy against the observed fraction, the fraction of
test problems whose solver converged, and the largest disagreement between fixed points
from 5 random starts; per solver, iterations and time per batch on the trained monotone
model; and the no-model reference ``marginal_mode`` (each hidden pixel imputed by its
most frequent training bin at that position).

    python benchmarks/mdbm_digits.py --mask random --observed 0.4 --epochs 3 --json out.json

JSON rows ``monotone``, ``baseline`` (the RBM), ``baseline_dense`` (columns ``imput_err``,
``label_acc``, ``converged_frac``, ``max_disagreement``, at ``--observed``, and
``lambda_min`` = lambda_min(I - Phi): the monotone class needs >= margin; below 0 the
free energy is no longer convex and mean-field is no longer provably unique; with
``--cap 2`` it is 2 - lambda_max(P Phi P) for the monotone row, and ``lambda_max_PPhiP``
= lambda_max(P Phi P) on the simplices' tangent space for every row: below 2 the fixed
point is unique),
``<model>@<fraction>`` for the sweep (each model is trained once, at ``--observed``, or
with ``--train-observed LO:HI`` on per-image fractions drawn from U(LO, HI), and
evaluated at every fraction of ``--fractions``; ``max_disagreement`` too with
``--sweep-disagreement``), ``marginal_mode`` (``imput_err``, ``label_acc``), and
``fb``, ``fb_anderson``, ``pr``, ``mf`` (columns ``iters``, ``ms_per_batch``).
How much the hidden tiers carry (unless ``--no-hidden-use``): model rows get
``hidden_entropy`` (mean entropy of the hidden units' ``q*`` over ``log k``; 1 = uniform,
unused) and ``hidden_probe_acc`` (a logistic regression of the label on the hidden
``q*``), and the row ``pixel_logreg`` (``label_acc`` of a logistic regression on the
one-hot shown pixels: the linear reference, trained on one masked view per image) and
``pixel_logreg_epochs`` (the same given ``--epochs`` masked views per image, as many as
the models see: the like-for-like linear reference); both are scored on the models' test
masks. ``--label-init logreg`` starts the monotone model's visible-label coupling from
that regression (:func:`init_label_from_logreg`).
``--checkpoint PREFIX`` saves each trained model (with its optimiser and mask stream) to
``PREFIX_<model>.pt``; ``--resume`` continues from there up to ``--epochs`` in total, so a
long run can be split into shorter ones with the same result.
``--device cuda`` places the data, the couplings, the solver state (Anderson buffers, the
cached Cholesky factor) on the GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import time
import zlib

import numpy as np
import torch

from ppl.runtime import monotone_dbm as M


def load(K: int, n_train: int, n_test: int, seed: int):
    from sklearn.datasets import load_digits

    X, Y = load_digits(return_X_y=True)
    bins = np.minimum(np.floor(X * K / 17.0), K - 1).astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(X))
    tr, te = perm[:n_train], perm[n_train:n_train + n_test]
    t = torch.as_tensor
    return t(bins[tr]), t(Y[tr]), t(bins[te]), t(Y[te])


MODELS = {"monotone": (True, "full"), "baseline": (False, "layered"),
          "baseline_dense": (False, "full")}


def build(kind: str, K: int, hidden: int, args) -> M.MonotoneDBM:
    """``kind``: a key of ``MODELS`` (monotone, the RBM ``baseline``, ``baseline_dense``)."""
    monotone, pattern = MODELS[kind]
    if monotone:  # the monotone model's A: full, or in row blocks per pair of layers
        pattern = args.pattern
    return M.MonotoneDBM(
        visible=M.units(64, K), hidden=[M.units(hidden, K)] * args.tiers, label=M.units(1, 10),
        margin=args.margin, monotone=monotone, solver="fb" if monotone else "mf",
        alpha=args.alpha, tol=args.tol, max_iter=args.max_iter, anderson=5,
        observed=args.train_observed or args.observed, mask=args.mask,
        init_scale=1.0 if monotone else 0.5,
        seed=args.seed, readout=args.readout, label_readout=args.label_readout,
        rank=args.rank, pattern=pattern, **({"cap": args.cap} if monotone else {}),
        evidence_gain=getattr(args, "evidence_gain", None),
        **({"coupling": "conv", "kernel": args.kernel, "channels": args.channels}
           if monotone and args.coupling == "conv" else {})).to(args.device)


def train(m: M.MonotoneDBM, X, Y, args, name: str):
    taus = [p for n, p in m.named_parameters() if n.startswith("tau_")]
    rest = [p for n, p in m.named_parameters() if not n.startswith("tau_")]
    groups = [{"params": rest}]
    if taus:
        groups.append({"params": taus, "lr": args.readout_lr or args.lr})
    opt = torch.optim.Adam(groups, lr=args.lr)
    g = torch.Generator().manual_seed(args.seed)
    start = 0
    ck = f"{args.checkpoint}_{name}.pt" if args.checkpoint else None
    if ck and args.resume:
        # the model, Adam's moments and the mask stream, so a resumed run equals an
        # uninterrupted one (test_benchmark_resume_equals_one_run); loaded on the CPU, where
        # the generator's state must be (load_state_dict copies onto the model's device)
        state = torch.load(ck, map_location="cpu")
        changed = [k for k, v in _training_config(args).items()
                   if state["config"].get(k) != v]
        if changed:
            raise ValueError(f"{ck} was trained with other settings: "
                             + ", ".join(f"--{k} {state['config'].get(k)}" for k in changed))
        m.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        g.set_state(state["generator"])
        start = state["epochs"]
        if start > args.epochs:
            raise ValueError(f"{ck} holds {start} epochs, more than --epochs {args.epochs}")
    for ep in range(start, args.epochs):
        perm = torch.randperm(len(X), generator=g).to(X.device)
        tot, n, t0 = 0.0, 0, time.time()
        for i in range(0, len(X), args.batch):
            idx = perm[i:i + args.batch]
            opt.zero_grad()
            loss, _ = m.loss(X[idx], Y[idx], generator=g)
            loss.backward()
            loss = loss.detach()
            opt.step()
            if m.monotone:
                m.check_margin()  # the margin, checked after every update
            tot += float(loss) * len(idx)
            n += len(idx)
        print(f"{name} epoch {ep + 1}: loss {tot / n:.4f} ({time.time() - t0:.1f}s)",
              flush=True)
    if ck:
        torch.save({"model": m.state_dict(), "opt": opt.state_dict(),
                    "generator": g.get_state(), "epochs": args.epochs,
                    "config": _training_config(args)}, ck)


# options that do not change what training computes (a resumed run may change them)
_NOT_TRAINING = {"epochs", "test", "solver_iters", "sweep_disagreement", "solver_table",
                 "hidden_use", "fractions", "models", "checkpoint", "resume", "threads",
                 "device", "json", "figures"}


def _training_config(args) -> dict:
    """The options a checkpoint's training depends on (data split, model, objective,
    optimiser), so that a resume with other settings is refused, not silently mixed."""
    return {k: v for k, v in sorted(vars(args).items()) if k not in _NOT_TRAINING}


@torch.no_grad()
def evaluate(m, X, Y, frac, args, solver=None):
    errs, accs, conv = [], [], []
    for i, shown in zip(range(0, len(X), args.batch), _evaluation_masks(X, frac, args),
                        strict=True):
        x, y = X[i:i + args.batch], Y[i:i + args.batch]
        inp = torch.where(shown, x, torch.full_like(x, -1))
        pv, pl, info = m.predict(inp, solver=solver or m.solver)
        hid = ~shown
        errs.append(((pv.argmax(-1) != x) & hid).sum().item() / max(hid.sum().item(), 1))
        accs.append((pl.argmax(-1) == y).float().mean().item())
        conv.append((info["res"] < m.tol).float().mean().item())
    return float(np.mean(errs)), float(np.mean(accs)), float(np.mean(conv))


def _evaluation_masks(X, frac, args) -> list[torch.Tensor]:
    """The test masks every model is scored on (:func:`evaluate`), one per batch of
    ``--batch`` images, drawn in turn from one generator seeded by ``--seed`` and
    ``frac``; :func:`pixel_logreg` scores the linear reference on the same masks."""
    g = torch.Generator().manual_seed(args.seed + 1000 + int(frac * 100))
    return [_shown_states(X[i:i + args.batch], frac, args, g)[0]
            for i in range(0, len(X), args.batch)]


@torch.no_grad()
def disagreement(m, X, frac, args, starts: int = 5, tol: float = 1e-6, max_iter: int = 500):
    """Largest coordinate difference between fixed points reached from random starts
    (each model's own solver, run to the relative residual ``tol``)."""
    g = torch.Generator().manual_seed(args.seed + 7)
    _, inp = _shown_states(X, frac, args, g)
    worst = 0.0
    for i in range(0, len(X), args.batch):
        p = M._detached(m.problem(inp[i:i + args.batch]))
        zs = []
        for _ in range(starts):
            z0 = p.random_start(p.clamp_mask.shape[0], g)
            opts = {"alpha": m.alpha, "anderson": 5} if m.solver == "fb" else {}
            z, _ = M.solve(p, z0, m.solver, tol=tol, max_iter=max_iter, **opts)
            zs.append(z)
        zs = torch.stack(zs)
        worst = max(worst, float((zs - zs[0]).abs().max()))
    return worst


@torch.no_grad()
def solver_table(m, X, frac, args):
    """Iterations and ms per batch for each solver to the relative residual --tol."""
    _, inp = _shown_states(X, frac, args, args.seed + 11)
    configs = {"fb": ("fb", {"alpha": args.alpha, "anderson": 0}),
               "fb_anderson": ("fb", {"alpha": args.alpha, "anderson": 5}),
               "pr": ("pr", {"alpha": 1.0 / m.cap}), "mf": ("mf", {})}
    rows, hists = {}, {}
    for name, (solver, opts) in configs.items():
        iters, ms, conv = [], [], []
        for i in range(0, len(X), args.batch):
            p = M._detached(m.problem(inp[i:i + args.batch]))
            z0 = p.prox(p.b.expand(p.clamp_mask.shape[0], -1), 1.0)
            if solver == "pr":
                p.cholesky(opts["alpha"])  # cached once per coupling: not per-batch work
            _sync(X.device)
            t0 = time.perf_counter()
            _, info = M.solve(p, z0, solver, tol=args.tol, max_iter=args.solver_iters, **opts)
            _sync(X.device)
            ms.append((time.perf_counter() - t0) * 1e3)
            iters.append(info["iters"])
            conv.append(float((info["res"] < args.tol).float().mean()))
            if i == 0:
                _, tr = M.solve(p, z0, solver, tol=args.tol, max_iter=args.solver_iters,
                                residual=p.residual, **opts)
                hists[name] = tr["history"]
        rows[name] = {"iters": float(np.mean(iters)), "ms_per_batch": float(np.mean(ms)),
                      "converged_frac": float(np.mean(conv))}
    return rows, hists


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _shown_states(X, frac, args, gen: torch.Generator | int):
    """(shown, inp): a ``--mask`` mask keeping the fraction ``frac`` of X's pixels, and the
    model's input with hidden pixels set to -1. ``gen``: a generator (advanced) or a seed."""
    g = torch.Generator().manual_seed(gen) if isinstance(gen, int) else gen
    shown = M.make_mask(tuple(X.shape), frac, args.mask, generator=g, device=X.device)
    return shown, torch.where(shown, X, torch.full_like(X, -1))


def _logreg_fit(Ftr: torch.Tensor, Ytr):
    """A multinomial logistic regression (sklearn, C = 1) fitted to training features."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=3000, C=1.0)
    return clf.fit(Ftr.cpu().double().numpy(), Ytr.cpu().numpy())


def _logreg_acc(Ftr: torch.Tensor, Ytr, Fte: torch.Tensor, Yte) -> float:
    """Test accuracy of a multinomial logistic regression fitted to training features."""
    clf = _logreg_fit(Ftr, Ytr)
    return float(clf.score(Fte.cpu().double().numpy(), Yte.cpu().numpy()))


@torch.no_grad()
def hidden_use(m, Xtr, Ytr, Xte, Yte, frac, args) -> dict:
    """How much the hidden tiers carry, at the observed fraction ``frac``:
    ``hidden_entropy``, the mean entropy of the hidden units' fixed-point marginals ``q*``
    over ``log k`` (1 = every hidden unit uniform, i.e. unused), and ``hidden_probe_acc``,
    the test accuracy of a logistic regression of the label on the hidden ``q*`` (fitted on
    the training images under their own random masks). A model whose classifier uses its
    hidden units as features has a probe near or above its ``label_acc``."""
    hidden = [s for s in m.layout.segments if s[0].startswith("hidden")]
    if not hidden:
        return {}
    feats, ent = [], []
    for X, seed in ((Xtr, args.seed + 21), (Xte, args.seed + 22)):
        _, inp = _shown_states(X, frac, args, seed)
        zs = [m.infer(inp[i:i + args.batch], None, grad=False)[0]
              for i in range(0, len(X), args.batch)]
        z = torch.cat(zs)
        f = torch.cat([z[:, off:off + n * k] for _, off, n, k in hidden], 1)
        feats.append(f)
        h = [(-(q * q.clamp_min(1e-30).log()).sum(-1) / math.log(q.shape[-1]))
             for q in (z[:, off:off + n * k].reshape(-1, n, k) for _, off, n, k in hidden)]
        ent.append(torch.cat(h, 1).mean().item())
    return {"hidden_entropy": ent[1], "hidden_probe_acc": _logreg_acc(feats[0], Ytr, feats[1], Yte)}


@torch.no_grad()
def pixel_logreg(Xtr, Ytr, Xte, Yte, frac, args, masks: int = 1) -> float:
    """The linear reference for the label: a logistic regression on the one-hot shown
    pixels (zero for hidden ones), trained and tested under random masks at ``frac``.
    ``masks``: masked views per training image (each its own random mask); the models
    see ``--epochs`` of them, and a linear classifier given as many is the like-for-like
    reference (row ``pixel_logreg_epochs``). Scored on the models' test masks
    (:func:`evaluate`'s; per image, where ``evaluate`` averages per batch). Before
    2026-11-27 (stop 22) it was scored on other masks: 0.7909 / 0.8161 / 0.8312 on seeds
    0-2 at 30 views, against 0.7859 / 0.7708 / 0.8111 on the models' masks."""
    shown_te = torch.cat(_evaluation_masks(Xte, frac, args))
    return _logreg_acc(_pixel_views(Xtr, frac, args, masks), Ytr.repeat(masks),
                       _one_hot_shown(Xte, shown_te, args.K), Yte)


def _pixel_views(Xtr, frac, args, masks: int) -> torch.Tensor:
    """``masks`` masked views of every training image, the one-hot shown pixels (zero for
    hidden ones), stacked view after view (the features of :func:`pixel_logreg`)."""
    g = torch.Generator().manual_seed(args.seed + 21)  # one view: the seed's first mask
    views = [_shown_states(Xtr, frac, args, g)[0] for _ in range(masks)]
    return torch.cat([_one_hot_shown(Xtr, s, args.K) for s in views])


@torch.no_grad()
def init_label_from_logreg(m: M.MonotoneDBM, W: torch.Tensor, c0: torch.Tensor) -> float:
    """``--label-init logreg``: set the monotone model's label columns of ``A`` so that its
    visible-label coupling is the logistic regression's read-out, scaled into the class.

    ``W`` ``[k_label, n_v k]``, ``c0`` ``[k_label]``: the weights and intercepts of a
    logistic regression on the one-hot shown pixels. The label's columns ``A_y`` become the
    least-norm solution of ``-s A_y^T A_C = t W diag(1/gamma)`` (``A_C`` the visible
    columns, ``gamma`` the evidence gains, 1 without), so a shown pixel adds ``t W_i x_i``
    to the label's field, and ``b_y = t c0``: the label's field on the shown pixels is
    ``t`` times the regression's logits. ``t`` is the largest for which the label's block
    does not set the global scale ``s``: ``||P_y (A^T A)_yy P_y||`` equals the largest
    other unit's block, or ``c - m`` where that is smaller (``s = 1``), so ``s`` is the
    other units' (as drawn, unless the label's drawn block was the largest) and ``Phi``
    stays in the class with the other couplings as drawn (exact when ``A_C`` has full column
    rank, as the digits' conv ``A``: 1024 rows, 256 columns). The
    label's readout temperature becomes ``tau_y^2 = 1/t``, so the readout logits start as
    the regression's. Returns ``t``. Needs a visible-label block (``pattern="full"``)."""
    if not m.monotone or m.pattern != "full":
        raise ValueError("--label-init logreg: the monotone model with pattern 'full' (a "
                         "layered A has no visible-label block)")
    lay = m.layout
    _, voff, nv, k = lay.segment("visible")
    _, loff, _, kl = lay.segment("label")
    A = m.a_matrix().double()
    gain = (m.gain_visible.double() if hasattr(m, "gain_visible")
            else torch.ones(nv, 1, dtype=torch.float64, device=A.device))
    target = W.double().to(A.device) / gain.repeat_interleave(k, 0)[:, 0]  # [kl, nv k]
    Q = torch.linalg.pinv(A[:, voff:voff + nv * k].T) @ target.T  # A_C^T Q = target^T
    Py = torch.eye(kl, dtype=A.dtype, device=A.device) - 1.0 / kl
    # every other unit's tangent block norm (the label's own is replaced)
    norms = [v for name, v in M.unit_block_norms(A.T @ A, lay, tangent=True)
             if name != "label"]
    # s = min(1, (c - m) / the largest block): the label's block may reach the largest
    # other one, or c - m where s = 1, without changing s
    top = torch.clamp(torch.cat(norms).max(), min=m.cap - m.margin)
    u = torch.sqrt(top / torch.linalg.matrix_norm(Py @ Q.T @ Q @ Py, ord=2))  # t / s
    a_y = (-u * Q).to(m.b.dtype)
    if m.coupling == "conv":
        m.A_label.copy_(a_y)
    else:
        m.A[:, loff:loff + kl] = a_y
    t = float(torch.clamp((m.cap - m.margin) / top, max=1.0) * u)  # s u, s after
    m.b[loff:loff + kl] = t * c0.to(m.b)
    if hasattr(m, "tau_label"):
        m.tau_label.fill_(1.0 / math.sqrt(t))
    return t


def _one_hot_shown(X, shown, K: int) -> torch.Tensor:
    return (torch.nn.functional.one_hot(X, K) * shown[..., None]).reshape(len(X), -1)


def marginal_mode(Xtr, Ytr, Xte, Yte, frac, args):
    """The no-model reference: every hidden pixel imputed by its most frequent training
    bin at that position, every label by the most frequent training class."""
    g = torch.Generator().manual_seed(args.seed + 1000 + int(frac * 100))
    mode = torch.mode(Xtr, 0).values
    errs = []
    for i in range(0, len(Xte), args.batch):
        x = Xte[i:i + args.batch]
        hid = ~_shown_states(x, frac, args, g)[0]
        errs.append(((mode != x) & hid).sum().item() / max(hid.sum().item(), 1))
    acc = (Yte == torch.mode(Ytr).values).float().mean().item()
    return float(np.mean(errs)), acc


# ---- figures: a tiny PNG writer (no plotting library is installed here) --------------
def write_png(path: str, rgb: np.ndarray) -> None:
    """Write an ``[H, W, 3]`` uint8 array as a PNG (zlib-compressed, filter 0 rows)."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[i].astype(np.uint8).tobytes() for i in range(h))

    def chunk(tag, data):
        c = struct.pack(">I", len(data)) + tag + data
        return c + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    with open(path, "wb") as fh:
        fh.write(png)


def digits_figure(path, x, shown, imputed, K, n=8, zoom=6):
    """Rows: masked input (hidden pixels red), imputation, truth; ``n`` test digits."""
    cell = 8 * zoom + 4
    img = np.full((3 * cell, n * cell, 3), 255, np.uint8)
    for j in range(n):
        for r, (vals, mask) in enumerate(((x[j], shown[j]), (imputed[j], None), (x[j], None))):
            g = (255 - vals.reshape(8, 8).numpy() * 255 // (K - 1)).astype(np.uint8)
            tile = np.repeat(np.repeat(np.stack([g] * 3, -1), zoom, 0), zoom, 1)
            if mask is not None:
                hid = np.repeat(np.repeat(~mask.reshape(8, 8).numpy(), zoom, 0), zoom, 1)
                tile[hid] = (230, 120, 120)
            img[r * cell + 2:r * cell + 2 + 8 * zoom, j * cell + 2:j * cell + 2 + 8 * zoom] = tile
    write_png(path, img)


def residual_figure(path, hists: dict, W=480, H=320):
    """log10 residual against iteration, one coloured polyline per solver, with grid lines
    at every power of ten (legend: fb red, fb_anderson blue, pr green, mf black)."""
    colours = {"fb": (220, 40, 40), "fb_anderson": (40, 80, 220), "pr": (30, 160, 60),
               "mf": (0, 0, 0)}
    img = np.full((H, W, 3), 255, np.uint8)
    vals = [v for h in hists.values() for v in h if v > 0]
    lo, hi = math.floor(math.log10(min(vals))), math.ceil(math.log10(max(vals)))
    n = max(len(h) for h in hists.values())
    pad = 20

    def xy(i, v):
        x = pad + (W - 2 * pad) * i / max(n - 1, 1)
        y = pad + (H - 2 * pad) * (hi - math.log10(max(v, 10.0 ** lo))) / max(hi - lo, 1)
        return int(round(x)), int(round(y))

    for e in range(lo, hi + 1):
        y = xy(0, 10.0 ** e)[1]
        img[y, pad:W - pad] = (210, 210, 210)
    for name, h in hists.items():
        pts = [xy(i, v) for i, v in enumerate(h)]
        for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:], strict=False):
            steps = max(abs(x1 - x0), abs(y1 - y0), 1)
            for t in range(steps + 1):
                xx = x0 + (x1 - x0) * t // steps
                yy = y0 + (y1 - y0) * t // steps
                img[max(yy - 1, 0):yy + 1, max(xx - 1, 0):xx + 1] = colours.get(name, (0, 0, 0))
    write_png(path, img)


def _fraction_range(text: str) -> tuple[float, float]:
    """``"LO:HI"`` -> ``(LO, HI)`` with ``0 <= LO <= HI <= 1``."""
    try:
        lo, hi = (float(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO:HI, got {text!r}") from None
    if not 0.0 <= lo <= hi <= 1.0:
        raise argparse.ArgumentTypeError(f"need 0 <= LO <= HI <= 1, got {text!r}")
    return lo, hi


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mask", choices=("random", "patch"), default="random")
    ap.add_argument("--observed", type=float, default=0.4)
    ap.add_argument("--train-observed", dest="train_observed", type=_fraction_range,
                    default=None, metavar="LO:HI",
                    help="training masks: each image's observed fraction drawn from "
                         "U(LO, HI) (every model); default: --observed for every image")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--train", type=int, default=768, help="training images (size knob)")
    ap.add_argument("--test", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--K", type=int, default=4, help="intensity bins")
    ap.add_argument("--hidden", type=int, default=64, help="hidden units per tier (K states)")
    ap.add_argument("--tiers", type=int, default=1, help="hidden tiers (every model)")
    ap.add_argument("--margin", type=float, default=0.01)
    ap.add_argument("--cap", type=float, default=2.0,
                    help="monotone model: 1 = Feng et al.'s I - Phi >= mI; up to 2 "
                         "(default): lambda_max(P Phi P) <= cap - m on the simplices' "
                         "tangent space")
    ap.add_argument("--rank", type=int, default=None, help="rows of A (default: d)")
    ap.add_argument("--coupling", choices=("dense", "conv"), default="dense",
                    help="monotone model's A (the baselines are unconstrained W)")
    ap.add_argument("--pattern", choices=("full", "layered"), default="full",
                    help="monotone model's A: every group in one row block, or one row "
                         "block per pair of consecutive layers (dense rows, or with "
                         "--coupling conv --channels feature maps per block)")
    ap.add_argument("--kernel", type=int, default=3)
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=0.125)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--max-iter", dest="max_iter", type=int, default=50)
    ap.add_argument("--solver-iters", dest="solver_iters", type=int, default=500)
    ap.add_argument("--sweep-disagreement", dest="sweep_disagreement", action="store_true",
                    help="max_disagreement at every fraction of the sweep too")
    ap.add_argument("--no-solver-table", dest="solver_table", action="store_false",
                    help="skip the per-solver timing rows")
    ap.add_argument("--no-hidden-use", dest="hidden_use", action="store_false",
                    help="skip the hidden-tier diagnostics (hidden_entropy, hidden_probe_acc, "
                         "the pixel_logreg row)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--readout", type=float, default=10.0,
                    help="initial pixel readout scale tau^2 (learned; 0: none)")
    ap.add_argument("--label-readout", dest="label_readout", type=float, default=1.0,
                    help="initial label readout scale tau^2 (learned)")
    ap.add_argument("--readout-lr", dest="readout_lr", type=float, default=None,
                    help="Adam rate of the readout temperatures (default: --lr)")
    ap.add_argument("--evidence-gain", dest="evidence_gain", type=float, default=None,
                    help="every model: shown pixels act on the free units with a learned "
                         "gain per pixel, starting at this value (default: off, gain 1)")
    ap.add_argument("--label-init", dest="label_init", choices=("random", "logreg"),
                    default="random",
                    help="monotone model: 'logreg' starts its visible-label coupling from "
                         "a logistic regression on the shown pixels of the training views "
                         "(the pixel_logreg_epochs fit), scaled into the class, and "
                         "tau_y^2 = 1/t (init_label_from_logreg); default: random")
    ap.add_argument("--fractions", default="0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9")
    ap.add_argument("--models", default="monotone,baseline,baseline_dense",
                    help="rows to train: monotone, baseline (RBM), baseline_dense")
    ap.add_argument("--checkpoint", default=None,
                    help="path prefix: after training, save each model's state (model, "
                         "optimiser, mask stream, epochs) to PREFIX_<model>.pt")
    ap.add_argument("--resume", action="store_true",
                    help="continue training from the --checkpoint files up to --epochs "
                         "in total (long runs in several shorter ones)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--json", default=None)
    ap.add_argument("--figures", default=None, help="folder for the PNG figures")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: CUDA is not available on this machine")
    if args.resume and not args.checkpoint:
        ap.error("--resume needs --checkpoint")
    unknown = set(args.models.split(",")) - set(MODELS)
    if unknown:
        ap.error(f"--models: unknown rows {sorted(unknown)}; choose from {list(MODELS)}")
    args.device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    Xtr, Ytr, Xte, Yte = (t.to(args.device) for t in
                          load(args.K, args.train, args.test, args.seed))
    out: dict = {}
    err, acc = marginal_mode(Xtr, Ytr, Xte, Yte, args.observed, args)
    out["marginal_mode"] = {"imput_err": err, "label_acc": acc}
    if args.hidden_use:
        out["pixel_logreg"] = {"label_acc": pixel_logreg(Xtr, Ytr, Xte, Yte, args.observed, args)}
        out["pixel_logreg_epochs"] = {"label_acc": pixel_logreg(
            Xtr, Ytr, Xte, Yte, args.observed, args, masks=max(args.epochs, 1))}
    models = {}
    for name in MODELS:
        if name not in args.models.split(","):
            continue
        m = build(name, args.K, args.hidden, args)
        t0 = time.time()
        if args.label_init == "logreg" and m.monotone and not args.resume:
            # the pixel_logreg_epochs fit: the same training views, nothing from the test set
            clf = _logreg_fit(_pixel_views(Xtr, args.observed, args, max(args.epochs, 1)),
                              Ytr.repeat(max(args.epochs, 1)))
            t_init = init_label_from_logreg(m, torch.as_tensor(clf.coef_),
                                            torch.as_tensor(clf.intercept_))
            print(f"{name}: label columns of A from the pixel logistic regression, "
                  f"t = {t_init:.4g}", flush=True)
        train(m, Xtr, Ytr, args, name)
        m.eval()
        models[name] = m
        err, acc, conv = evaluate(m, Xte, Yte, args.observed, args)
        dis = disagreement(m, Xte, args.observed, args)
        out[name] = {"imput_err": err, "label_acc": acc, "converged_frac": conv,
                     "max_disagreement": dis, "train_s": time.time() - t0}
        # lambda_min(I - Phi): >= margin for the monotone model; a control below the
        # margin is outside the monotone class, and below 0 mean-field is no longer
        # provably unique
        out[name]["lambda_min"] = m.check_margin()
        # the quantity the cap bounds (cap - margin for a monotone model at its bound),
        # from the projector form, a second route beside check_margin's tangent basis
        # (P Phi P is 0 off T: its top eigenvalue is lambda_max on T when that is >= 0)
        with torch.no_grad():
            Phi = m.phi()
            P = m.layout.centring(Phi.device, Phi.dtype)
            out[name]["lambda_max_PPhiP"] = float(torch.linalg.eigvalsh(P @ Phi @ P)[-1])
        if hasattr(m, "gain_visible"):  # the learned evidence gains (--evidence-gain)
            gv = m.gain_visible.detach()
            out[name].update(gain_mean=float(gv.mean()), gain_min=float(gv.min()),
                             gain_max=float(gv.max()))
        if args.hidden_use:
            out[name].update(hidden_use(m, Xtr, Ytr, Xte, Yte, args.observed, args))
        print(name, out[name], flush=True)
        for f in (float(s) for s in args.fractions.split(",")):
            e, a, c = evaluate(m, Xte, Yte, f, args)
            out[f"{name}@{f:g}"] = {"imput_err": e, "label_acc": a, "converged_frac": c}
            if args.sweep_disagreement:
                out[f"{name}@{f:g}"]["max_disagreement"] = disagreement(m, Xte, f, args)
    for f in (float(s) for s in args.fractions.split(",")):
        e, a = marginal_mode(Xtr, Ytr, Xte, Yte, f, args)
        out[f"marginal_mode@{f:g}"] = {"imput_err": e, "label_acc": a}
    rows, hists = solver_table(models["monotone"], Xte, args.observed, args) \
        if "monotone" in models and args.solver_table else ({}, {})
    out.update(rows)
    out["residual_history"] = {k: {str(i): v for i, v in enumerate(h)} for k, h in
                               hists.items()}
    print(f"{'row':<20}{'imput_err':>10}{'label_acc':>10}{'conv':>8}{'disagree':>11}"
          f"{'hid_ent':>9}{'probe':>8}")
    for k, v in out.items():
        if "label_acc" in v:
            nan = math.nan
            print(f"{k:<20}{v.get('imput_err', nan):>10.4f}{v['label_acc']:>10.4f}"
                  f"{v.get('converged_frac', nan):>8.3f}{v.get('max_disagreement', nan):>11.2e}"
                  f"{v.get('hidden_entropy', nan):>9.4f}{v.get('hidden_probe_acc', nan):>8.4f}")
    for k in ("fb", "fb_anderson", "pr", "mf"):
        if k not in out:
            continue
        v = out[k]
        print(f"{k:<16} iters {v['iters']:7.1f}  ms/batch {v['ms_per_batch']:8.1f}  "
              f"converged {v['converged_frac']:.3f}")
    if args.figures:
        import os

        os.makedirs(args.figures, exist_ok=True)
        x = Xte[:8]
        shown, inp = _shown_states(x, args.observed, args, args.seed + 3)
        for name, m in models.items():
            pv, _, _ = m.predict(inp)
            imputed = torch.where(shown, x, pv.argmax(-1))
            digits_figure(os.path.join(args.figures, f"mdbm_{args.mask}_{name}.png"),
                          x.cpu(), shown.cpu(), imputed.cpu(), args.K)
        if hists:
            residual_figure(os.path.join(args.figures, f"mdbm_{args.mask}_residuals.png"),
                            hists)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
