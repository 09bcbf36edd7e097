"""Neural processes: ``cnp``, ``np``, ``anp`` and ``martingale_np`` (METHODS.md section 3).

Registration only (no torch): the checker reads these signatures. One spelling for the
whole family, so a model switches family in one word::

    g = martingale_np(x_dim=1, y_dim=1, hidden=128, pseudo=16)
    yt ~ g(xc, yc, xt)

``g`` is a network value (an ``nn.Module`` registered with ``pyro.module``); ``g(xc, yc,
xt)`` is the predictive distribution of the targets given the context (a mixture over
``samples`` latent draws / pseudo-context sets for np, anp and martingale_np). The
``np_train`` inference method meta-trains ``g`` on a task source (1-D GP tasks or an
``.npz`` file of tasks); runtime in ``ppl/runtime/neural_process.py``, runner in
``ppl/infer/np_meta.py``, docs in ``docs/constructs/neural_process.md``.
"""

from __future__ import annotations

from ..builtins import Builtin, register
from ..infer.methods import _COMMON, Method, Option
from ..infer.methods import register as register_method

_PARAMS = ("x_dim", "y_dim", "hidden", "pseudo", "samples", "heads")

for _name, _cls, _doc in (
    ("cnp", "CNP", "conditional neural process (mean-pooled deterministic encoder)"),
    ("np", "NP", "latent neural process (mean-pooled deterministic + latent path)"),
    ("anp", "ANP", "attentive neural process (cross-attention + latent path)"),
    ("martingale_np", "MPNP",
     "martingale posterior neural process (ISAB pseudo-context generator)"),
):
    register(Builtin(_name, f"rt.neural_process.{_cls}", _PARAMS, 2, kind="construct",
                     result="network", call_result="dist", doc=_doc))

TASK_SOURCES = ("rbf", "matern52", "periodic", "tnoise", "file")

register_method(Method("np_train", {
    "steps": Option(2000, int, low=1, doc="meta-training steps (one batch of tasks each)"),
    "batch": Option(16, int, low=1, doc="tasks per step"),
    "lr": Option(5e-4, float, low=0.0, doc="Adam learning rate (cosine decay to 0)"),
    "tasks": Option("rbf", "symbol", TASK_SOURCES,
                    doc="task source: 1-D GP tasks with this kernel, or 'file'"),
    "task_file": Option("", str, doc="the .npz of tasks when tasks=file (arrays xc, yc, "
                                     "xt, yt, each [tasks, points, dim])"),
    "lengthscale_lo": Option(0.1, float, low=0.0, doc="GP lengthscale ~ U(lo, hi)"),
    "lengthscale_hi": Option(0.6, float, low=0.0),
    "scale_lo": Option(0.1, float, low=0.0, doc="GP output scale ~ U(lo, hi)"),
    "scale_hi": Option(1.0, float, low=0.0),
    "period_lo": Option(0.1, float, low=0.0, doc="periodic kernel period ~ U(lo, hi)"),
    "period_hi": Option(0.5, float, low=0.0),
    "noise": Option(0.02, float, low=0.0, doc="Gaussian observation noise sd"),
    "tnoise_scale": Option(0.15, float, low=0.0, doc="Student-t noise scale ~ U(0, this)"),
    "max_points": Option(50, int, low=6, doc="points per task (context + target)"),
    "train_samples": Option(4, int, low=1,
                            doc="latent draws / pseudo sets per task in training (K)"),
    **_COMMON,
    "dtype": Option("float32", "symbol", ("float32", "float64")),
}, doc="meta-train neural processes over a task source (Adam, cosine decay)",
    runner="ppl.infer.np_meta:run"))
