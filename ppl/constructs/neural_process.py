"""Neural processes: ``cnp``, ``np``, ``anp``, ``martingale_np`` and ``martingale_anp``
(METHODS.md section 3).

Registration only (no torch): the checker reads these signatures. One spelling for the
whole family, so a model switches family in one word::

    g = martingale_np(x_dim=1, y_dim=1, hidden=128, pseudo=16)
    yt ~ g(xc, yc, xt)

``g`` is a network value (an ``nn.Module`` registered with ``pyro.module``); ``g(xc, yc,
xt)`` is the predictive distribution of the targets given the context (a mixture over
``samples`` latent draws / pseudo-context sets for np, anp, martingale_np and
martingale_anp). The ``np_train`` inference method meta-trains ``g`` on a task source
(1-D GP tasks or an ``.npz`` file of tasks); runtime in ``ppl/runtime/neural_process.py``, runner in
``ppl/infer/np_meta.py``, docs in ``docs/constructs/neural_process.md``.
"""

from __future__ import annotations

from pathlib import Path

from ..builtins import Builtin, register
from ..check.signatures import suggest
from ..infer.methods import _COMMON, SITE, Method, Option
from ..infer.methods import register as register_method

_PARAMS = ("x_dim", "y_dim", "hidden", "pseudo", "samples", "heads", "generator")
_RANGES = {"x_dim": "[1, inf)", "y_dim": "[1, inf)", "hidden": "[1, inf)",
           "pseudo": "[0, inf)", "samples": "[1, inf)", "heads": "[1, inf)"}

# the pseudo-context generator's bases (martingale_np, martingale_anp: ``generator=``),
# one list for the checker and the runtime (PseudoContextGenerator.mode)
GENERATOR_MODES = ("mean", "resample", "predictive", "mixed")

# ``g(xc, yc, xt)``: the inputs of a neural process's predictive, in order (the checker's
# arity check and the runtime's shape errors name them)
CALL_INPUTS = ("xc", "yc", "xt")

for _name, _cls, _doc in (
    ("cnp", "CNP", "conditional neural process (mean-pooled deterministic encoder)"),
    ("np", "NP", "latent neural process (mean-pooled deterministic + latent path)"),
    ("anp", "ANP", "attentive neural process (cross-attention + latent path)"),
    ("martingale_np", "MPNP",
     "martingale posterior neural process (ISAB pseudo-context generator)"),
    ("martingale_anp", "AMPNP",
     "attentive martingale posterior neural process (cross-attention + pseudo-context)"),
):
    register(Builtin(_name, f"rt.neural_process.{_cls}", _PARAMS, 2, kind="construct",
                     result="network", call_result="dist", doc=_doc,
                     choices={"generator": GENERATOR_MODES}, ranges=_RANGES,
                     # x_dim and y_dim are sizes, checked as such
                     integers=("hidden", "pseudo", "samples", "heads"),
                     call_params=CALL_INPUTS,
                     call_dims={"xc": "x_dim", "yc": "y_dim", "xt": "x_dim"},
                     # its weights are trained by np_train on tasks; svi, nuts, map...
                     # would leave the network untrained (final ELBO -0)
                     methods=("np_train",)))

KERNELS = ("rbf", "matern52", "periodic", "tnoise")

# gp_tasks(...) arguments: (default, kind, lowest value); ranges are [lo, hi] lists
GP_TASK_ARGS: dict[str, tuple[object, str, float]] = {
    "kernel": ("rbf", "kernel", 0.0),
    "lengthscale": ([0.1, 0.6], "range", 0.0),
    "scale": ([0.1, 1.0], "range", 0.0),
    "period": ([0.1, 0.5], "range", 0.0),
    "noise": (0.02, "number", 0.0),
    "tnoise_scale": (0.15, "number", 0.0),
    "max_points": (50, "int", 7),
}


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _gp_arg_problem(key: str, value) -> str | None:
    default, kind, low = GP_TASK_ARGS[key]
    if kind == "kernel":
        if value not in KERNELS:
            hint = suggest(str(value), KERNELS)
            return (f"gp_tasks kernel must be one of {', '.join(KERNELS)}, got {value!r}"
                    + (f" (did you mean '{hint}'?)" if hint else ""))
        return None
    if kind == "range":
        if not (isinstance(value, list) and len(value) == 2 and all(map(_is_number, value))):
            return f"gp_tasks {key} must be a range [lo, hi] of two numbers"
        lo, hi = value
        if not low < lo <= hi:
            return f"gp_tasks {key} range [{lo:g}, {hi:g}] must have 0 < lo <= hi"
        return None
    if kind == "int" and (not isinstance(value, int) or isinstance(value, bool)):
        return f"gp_tasks {key} must be an integer"
    if not _is_number(value):
        return f"gp_tasks {key} must be a number"
    if value < low:
        return f"gp_tasks {key} must be at least {low:g} (got {value:g})"
    return None


def task_source_problem(value) -> str | None:
    """Why ``value`` is not a task source, or None. A task source is a kernel name
    (``rbf``: GP tasks with the default ranges), ``gp_tasks(kernel=..., lengthscale=[lo,
    hi], scale=[lo, hi], period=[lo, hi], noise=..., tnoise_scale=..., max_points=...)``,
    ``task_file("PATH.npz")``, or (from Python) an object with a ``sample`` method."""
    if isinstance(value, str):
        if value in KERNELS:
            return None
        hint = suggest(value, KERNELS)
        return (f"expected a kernel ({', '.join(KERNELS)}), gp_tasks(...) or "
                f"task_file(\"PATH.npz\"), got '{value}'"
                + (f" (did you mean '{hint}'?)" if hint else ""))
    if isinstance(value, dict) and "call" in value:
        name, args, kwargs = value["call"], value.get("args", []), value.get("kwargs", {})
        if name == "gp_tasks":
            if args:
                return ("gp_tasks takes keyword arguments only (kernel=rbf, "
                        "lengthscale=[lo, hi], ...)")
            for key, v in kwargs.items():
                if key not in GP_TASK_ARGS:
                    hint = suggest(key, GP_TASK_ARGS)
                    return (f"gp_tasks has no argument '{key}'"
                            + (f" (did you mean '{hint}'?)" if hint else
                               f"; it takes {', '.join(GP_TASK_ARGS)}"))
                problem = _gp_arg_problem(key, v)
                if problem:
                    return problem
            return None
        if name == "task_file":
            paths = list(args) + [v for k, v in kwargs.items() if k == "path"]
            extra = [k for k in kwargs if k != "path"]
            if extra:
                return f"task_file has no argument '{extra[0]}'; it takes one path"
            if len(paths) != 1 or not isinstance(paths[0], str) or not paths[0]:
                return 'task_file takes one path string: task_file("tasks.npz")'
            return None
        hint = suggest(name, ("gp_tasks", "task_file"))
        return (f"unknown task source {name}(...); expected gp_tasks(...) or task_file(...)"
                + (f" (did you mean '{hint}'?)" if hint else ""))
    if hasattr(value, "sample"):
        return None
    return "expected a kernel name, gp_tasks(...) or task_file(\"PATH.npz\")"


def anchor_task_file(value, filename, span) -> object:
    """``task_file("PATH")`` written in a model file: remember where it was written and,
    for a real file, anchor PATH to the model file's folder (as CmdStan users expect of a
    data file kept next to the model), so the fit finds it from any working directory.

    Adds ``value[SITE]`` (compile-site data, kept by the compiled model but not written
    into generated source: ``ppl.infer.methods.without_site``): ``"at"`` ([model file,
    line, column] of the option, for a located error when the fit starts and the file is
    missing) and ``"file"`` (the anchored absolute path; absent for source text not from
    a file, ``ppl.compile(text)``, whose paths stay relative to the working directory, as
    they are for a generated module run on its own). Other task sources are returned
    unchanged, but for ``gp_tasks(...)``, which remembers ``"at"`` too (GP tasks that
    its arguments make impossible to draw are an error there)."""
    if not (isinstance(value, dict) and value.get("call") in ("task_file", "gp_tasks")):
        return value
    filename = "<string>" if filename is None else str(filename)
    if value["call"] == "gp_tasks":
        return dict(value, **{SITE: {"at": [filename, span.line, span.col]}})
    written = (list(value.get("args", [])) or [value.get("kwargs", {}).get("path")])[0]
    site = {"at": [filename, span.line, span.col]}
    if isinstance(written, str) and filename and not filename.startswith("<"):
        site["file"] = str(Path(filename).resolve().parent / written)
    return dict(value, **{SITE: site})


register_method(Method("np_train", {
    "steps": Option(2000, int, low=1, doc="meta-training steps (one batch of tasks each)"),
    "batch": Option(16, int, low=1, doc="tasks per step"),
    "lr": Option(5e-4, float, low=0.0, low_open=True,
                 doc="Adam learning rate (cosine decay to 0)"),
    "tasks": Option("rbf", "spec", check=task_source_problem, resolve=anchor_task_file,
                    doc="task source: a kernel name, gp_tasks(kernel=..., lengthscale=[lo, "
                        "hi], ...) or task_file(\"PATH.npz\")"),
    "train_samples": Option(4, int, low=1,
                            doc="latent draws / pseudo sets per task in training (K)"),
    **_COMMON,
    "dtype": Option("float32", "symbol", ("float32", "float64")),
}, doc="meta-train neural processes over a task source (Adam, cosine decay)",
    runner="ppl.infer.np_meta:run",
    needs=("cnp", "np", "anp", "martingale_np", "martingale_anp")))
