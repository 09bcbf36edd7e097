"""``z ~ fractional_sde(times=t, drift=..., diffusion=..., hurst=H, K=5, kind=2, x0=...)``.

``drift`` and ``diffusion`` take numbers, networks, params or function literals of the
state and time (``drift=(x, t) => -theta * (x - mu)``); ``noise=general|additive`` is the
torchsde noise type; ``control=noise|drift`` what the control network outputs (u, or the
change of X's drift it causes), ``control=affine`` a per-step affine control instead of a
network (exact for linear models), ``control=optimal`` that family at its closed-form
optimum; ``elbo=moments|mc`` the closed-form (Rao-Blackwellised) or Monte Carlo ELBO
(``mc`` by default; ``moments`` is opt-in, and the default under ``control=optimal``).

A latent path driven by (Markov-approximated) fractional Brownian motion, fitted by
path-space variational inference (Daems et al., ICLR 2024; ``../shared/METHODS.md``
section 2). Registration only (no torch here): the runtime is
:mod:`ppl.runtime.fractional_sde` and the maths of the MA-fBM weights :mod:`ppl.runtime.mafbm`.
"""

from __future__ import annotations

from ..builtins import Builtin, ContextArg, FunctionParam, register
from ..check import sizes
from ..syntax import ast

PARAMS = ("times", "drift", "diffusion", "hurst", "K", "kind", "x0", "gamma_max", "gamma_min",
          "dt", "dim", "hidden", "n_freq", "data", "data_index", "noise", "control", "elbo")

NOISE = ("general", "additive")
CONTROL = ("noise", "drift", "affine", "optimal")
ELBO = ("mc", "moments")


def _state_dim(kwargs):
    """D, the latent dimension: ``dim`` (1 when absent), or None when not a known size."""
    d = kwargs.get("dim")
    if d is None:
        return sizes.const(1)
    if getattr(d, "dim", None) is not None:
        return d.dim
    if isinstance(getattr(d, "value", None), int):
        return sizes.const(d.value)
    return None


def _path_shape(args, kwargs):
    """[T, dim]: one row per time point, one column per latent dimension."""
    t = kwargs.get("times", args[0] if args else None)
    if t is None or t.shape is None or len(t.shape) != 1:
        return None
    D = _state_dim(kwargs)
    return None if D is None else (t.shape[0], D)


def _field_params(args, kwargs):
    """drift/diffusion literals ``(x, t) => ...``: the state x is real[dim], t a real."""
    D = _state_dim(kwargs)
    return (None if D is None else (D,)), ()


def _field_result(args, kwargs):
    D = _state_dim(kwargs)
    return None if D is None else (D,)


_FIELD = FunctionParam(("state", "time"), _field_params, _field_result)


def _word(e) -> str | None:
    return e.id if isinstance(e, ast.Name) else None


def _data_names(model: ast.Model) -> set[str]:
    """The model's data: its arguments, their sizes, and top-level values computed from
    them alone (transformed data, ``y = y_raw - 0.5``)."""
    known = {a.name for a in model.args} | {n.id for a in model.args for n in ast.walk(a.type)
                                            if isinstance(n, ast.Name)}
    for st in model.body:
        if isinstance(st, ast.Assign) and all(n in known for n in ast.names_read(st.value)):
            known.add(st.name)
    return known


def _observation(stmt: ast.Sample, model: ast.Model):
    """The closed form's observation (``elbo=moments`` or ``control=optimal``), found at
    compile time: the path ``z`` must be drawn at the top level and read by exactly one
    statement after it, ``y ~ Normal(z[rows, c], sd)`` with ``y`` data, rows ``:`` or an
    index, the column an integer, ``:`` or absent, and rows and sd defined before the path.
    Then E_Q log p(y | z) has the closed form of ``moment_elbo`` (METHODS.md section 2),
    and the call gets ``observation=rt.fractional_sde.Observation(...)``. Returns None when
    the closed form is not asked for, a (reason, argument) pair when it cannot apply."""
    kw = {k.name: k.value for k in stmt.dist.kwargs}
    asked = next((a for a, w in (("control", "optimal"), ("elbo", "moments"))
                  if _word(kw.get(a)) == w), None)
    if asked is None:
        return None
    z = stmt.name

    def no(reason: str):
        return (f"fractional_sde: {asked}={_word(kw[asked])} needs the closed form of a "
                "linear-Gaussian model (an affine drift, a constant diffusion, x0 ~ Normal, "
                f"one Normal observation of the path), and here {reason}", asked)

    at = next((i for i, st in enumerate(model.body) if st is stmt), None)
    if at is None:
        return no(f"the path {z} is drawn inside a plate (draw it at the top level)")
    later = model.body[at + 1:]
    uses = [n for n in ast.walk(later) if isinstance(n, ast.Name) and n.id == z]
    if len(uses) != 1:
        return no(f"the path {z} is read by {len(uses)} expressions; the closed form needs "
                  f"exactly one, its observation y ~ Normal({z}[...], sd)")
    data = _data_names(model)
    obs = next((st for st in later if any(n is uses[0] for n in ast.walk(st))), None)
    if not (isinstance(obs, ast.Sample) and obs.name in data):
        return no(f"the path {z} is not read by an observation of data at the top level "
                  f"of the model (y ~ Normal({z}[...], sd))")
    d = obs.dist
    if not (isinstance(d, ast.Call) and d.func_name == "Normal"):
        return no(f"the observation of {z} ('{obs.name}') is not a Normal")
    args = dict(zip(("loc", "scale"), d.args, strict=False)) | {k.name: k.value for k in d.kwargs}
    loc, sd = args.get("loc"), args.get("scale")
    rows = col = None
    if isinstance(loc, ast.Index) and loc.value is uses[0]:
        items = loc.indices
        full = [isinstance(e, ast.Slice) and e.start is None and e.stop is None
                for e in items]
        c = items[1] if len(items) == 2 else None
        const = (c.value if isinstance(c, ast.Number) else
                 -c.operand.value if isinstance(c, ast.Neg)
                 and isinstance(c.operand, ast.Number) else None)
        if len(items) > 2 or (c is not None and not full[1] and not isinstance(const, int)):
            return no(f"the observation reads {z} at other indices than {z}[rows], "
                      f"{z}[rows, c] or {z}[rows, :] (c an integer)")
        if isinstance(items[0], ast.Slice) and not full[0]:
            return no(f"the observation reads a slice of {z}'s times; use an index")
        rows = None if full[0] else items[0]
        col = None if c is None or full[1] else const
    elif loc is not uses[0]:
        return no(f"the observation's mean is not the path {z} read at some times")
    if sd is None:
        return no(f"the observation of {z} has no sd")
    known = data | {st.name for st in model.body[:at] if hasattr(st, "name")}
    for what, e in (("rows", rows), ("sd", sd)):
        late = [n for n in ast.names_read(e) if n not in known] if e is not None else []
        if late:
            return no(f"the observation's {what} reads '{late[0]}', which is not defined "
                      f"before the path (declare it before {z})")
    exprs = {"value": ast.Name(obs.name, span=obs.name_span), "sd": sd}
    if rows is not None:
        exprs["rows"] = rows
    return ContextArg("observation", "rt.fractional_sde.Observation", exprs,
                      {"col": col, "site": obs.name})

register(Builtin(
    "fractional_sde", "rt.fractional_sde.fractional_sde", PARAMS, 1,
    kind="construct", result="real", shape=_path_shape, tilde="new",
    functions={"drift": _FIELD, "diffusion": _FIELD},
    choices={"noise": NOISE, "control": CONTROL, "elbo": ELBO},
    ranges={"hurst": "(0, 1)", "K": "[1, inf)", "kind": (1, 2), "gamma_max": "(0, inf)",
            "gamma_min": "(0, inf)", "dt": "(0, inf)", "dim": "[1, inf)", "n_freq": "[0, inf)"},
    methods=("svi", "map"),  # path-space VI: the ELBO of METHODS.md section 2
    lists=("hidden",),  # layer widths of the neural drift
    context=_observation,  # the closed form's observation statement
    missing_as_nan=("data",),  # observations as control features: NaN where missing
    doc="latent SDE path [T, dim] driven by MA-fBM with Hurst index hurst (learned by "
        "default); path-space VI (METHODS.md section 2)"))
