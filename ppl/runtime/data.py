"""Binding data to a model's signature: tensors, sizes and the checks only data can settle.

Sizes (``N`` in ``real[N, D]``) are read off the shapes of the data actually passed. A
size bound differently by two arguments, a data key named like a size that disagrees
with the shapes, a wrong rank, a non-integer for ``int`` data, a value outside declared
bounds, or a deferred size equality from the checker is an error that names both sources
and points at the declaration in the model file.
"""

from __future__ import annotations

import difflib
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import sympy
import torch

from ..check.sizes import shown
from ..io.data import INT64_RANGE, number_problem
from ..syntax.diagnostics import BdlError, Diagnostic, Span


class DataWarning(UserWarning):
    """Data that binding ignores (keys that are not arguments of the model)."""


@dataclass
class ArgSpec:
    name: str
    base: str
    dims: list[str]
    line: int = 0
    col: int = 0
    optional: bool = False
    lower: float | str | None = None  # a number, or the name of another argument or size
    upper: float | str | None = None


# the largest size a torch tensor's dimension can take (an int64)
_MAX_SIZE = INT64_RANGE[1]


def _names(dim: str) -> set[str]:
    """The size names in a dimension's text (``K + 1`` -> {K})."""
    return set(re.findall(r"[A-Za-z_]\w*", dim))


@dataclass
class SizeCheck:
    """Two dimensions that must be equal once the data fix the sizes; ``at_least``:
    ``left`` may be larger (a dimension read by a plate's index up to the plate's size).
    ``at_least`` with ``right`` "0": ``left`` is the shift ``e`` of a plate index
    ``y[t + e]`` (``L - 1``), which t = 0 reads (``what``: ``y[t + L - 1] at t = 0 reads
    y[L - 1]``), or an index or a slice's start or stop written with sizes (``what``:
    ``the start of the slice x[K - 2:]``, ``the index x[K - 3]``), and a negative value
    is refused as torch's wrap."""

    left: str
    right: str
    line: int = 0
    col: int = 0
    what: str = ""
    at_least: bool = False


@dataclass
class IndexCheck:
    """Every value of the int data argument ``name``, plus ``offset`` (``a[county - 1]``:
    -1), indexes a dimension of size ``size`` (a dimension expression) of ``what``
    (``theta[g[m]]``): binding checks each is in [0, size), since torch would read a
    negative index from the end. ``line``/``col``: the index in the model."""

    name: str
    size: str
    line: int = 0
    col: int = 0
    what: str = ""
    offset: int = 0


@dataclass
class Signature:
    name: str
    source: str
    args: list[ArgSpec]
    sizes: list[str]
    checks: list[SizeCheck] = field(default_factory=list)
    index_checks: list[IndexCheck] = field(default_factory=list)


def _err(msg: str, line: int = 0, col: int = 0, notes=None) -> Diagnostic:
    return Diagnostic(msg, Span(line, col) if line else Span(0, 0), "error", notes or [])


def _to_tensor(spec: ArgSpec, value, dtype, device) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        arr = value.detach().cpu().numpy()
    else:
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError):
            raise ValueError("it is a ragged (non-rectangular) or non-numeric array") from None
    if arr.dtype == object:
        if _has_big_int(value):
            raise ValueError(f"it holds an integer too large for int64 (at most {INT64_RANGE[1]})")
        raise ValueError("it is a ragged (non-rectangular) or non-numeric array")
    if spec.base == "int":
        if arr.dtype.kind == "b" or _has_bool(value):
            # as for real data: true/false is not a number (declare it bool)
            raise ValueError("it is declared int but holds true/false values: declare it "
                             "bool, or write the numbers 0 and 1")
        if arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
                raise ValueError("it is declared int but holds non-integer values")
        elif arr.dtype.kind not in "iu":
            raise ValueError(f"it is declared int but holds {_kind_words(arr)}")
        # as floats (2**63 - 1 rounds to 2**63): the exact ends, -2**63 <= x < 2**63
        if arr.dtype.kind in "uf" and arr.size and (
                float(arr.max()) >= -float(INT64_RANGE[0]) or float(arr.min()) < INT64_RANGE[0]):
            raise ValueError(f"it holds an integer too large for int64 (at most {INT64_RANGE[1]})")
        return torch.as_tensor(arr.astype(np.int64), device=device)
    if spec.base == "bool":
        if arr.dtype.kind not in "biu" or not np.all((arr == 0) | (arr == 1)):
            raise ValueError("it is declared bool but holds values other than 0/1")
        return torch.as_tensor(arr.astype(bool), device=device)
    if arr.dtype.kind == "b" or (arr.dtype.kind in "iuf" and _has_bool(value)):
        # Stan's rule: a boolean is not a number (a JSON true/false for real data is
        # more likely a bool argument declared real than a number)
        raise ValueError("it is declared real but holds true/false values: declare it "
                         "bool, or write the numbers 0 and 1")
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"it is declared real but holds {_kind_words(arr)}")
    return torch.as_tensor(arr.astype(np.float64), device=device).to(dtype)


def _has_big_int(value) -> bool:
    """Whether a (nested) list holds a Python int beyond int64 (numpy then makes an object
    array, which would otherwise read as ragged)."""
    if isinstance(value, int):
        return number_problem(value) is not None  # the data reader's int64 test
    return isinstance(value, (list, tuple)) and any(_has_big_int(v) for v in value)


def _has_bool(value) -> bool:
    """Whether a (nested) list holds a Python bool among numbers ([1.5, True] becomes a
    float array that no longer shows it)."""
    if isinstance(value, bool):
        return True
    if not isinstance(value, (list, tuple)):
        return False
    if value and isinstance(value[0], (list, tuple)):
        return any(_has_bool(v) for v in value)
    return bool in set(map(type, value))


def _kind_words(arr) -> str:
    return {"U": "strings", "S": "strings", "c": "complex numbers"}.get(
        arr.dtype.kind, f"{arr.dtype} values")


def _not_whole(what: str, expr, value) -> str:
    return (f"{what} is declared {shown(expr)} = {shown(value)}, which is not a whole number "
            "of elements (sizes from the data)")


def _size_notes(expr, bound: dict) -> list[str]:
    """Where each size of ``expr`` got its value: 'N is 5 from data key 'N''."""
    return [f"{k} is {bound[k][0]} from {bound[k][1]}"
            for k in sorted(str(x) for x in expr.free_symbols) if k in bound]


def bind(sig: Signature, data: dict, *, device=None, dtype=None, source_text: str | None = None,
         may_omit: frozenset[str] = frozenset(),
         drawn: dict[str, tuple[int, int, str]] | None = None) -> dict:
    """Data dict -> keyword arguments of the generated model (sizes included).

    ``may_omit`` names required arguments that may still be missing (``None``: their
    ``~`` statements draw them), for a simulation. Raises :class:`BdlError` (rendered with
    the model file) listing every problem.

    ``drawn`` (for a fit): the latents the model draws with '~', name -> (line, col,
    ``y: real[N]``) (``CheckedModel.drawn``); a data key naming one is an error at its
    '~', since the fit would draw it and ignore the data. Without it (predict, a prior
    simulation) such a key is an unused key, as any other.
    """
    dtype = dtype or torch.get_default_dtype()
    device = torch.device(device) if device is not None else torch.empty(0).device
    errors: list[Diagnostic] = []
    out: dict = {}
    bound: dict[str, tuple[int, str]] = {}
    bound_by: dict[str, ArgSpec] = {}  # the argument whose shape bound a size
    syms = {n: sympy.Symbol(n, integer=True, positive=True) for n in sig.sizes}
    arg_names = {a.name for a in sig.args}
    pending: list[tuple[ArgSpec, int, sympy.Expr, int]] = []
    # data keys the model does not take: ignored with a warning, and named when a required
    # argument is missing (a misspelling?)
    extra = sorted(k for k in data if k not in arg_names and k not in sig.sizes)
    for k in [k for k in extra if k in (drawn or {})]:
        line, col, decl = drawn[k]
        errors.append(_err(f"'{k}' is given as data but the model draws it", line, col,
                           [f"declare '{decl}' as an argument of model {sig.name} to observe "
                            "it"]))
        extra.remove(k)

    for spec in sig.args:
        if spec.name in sig.sizes:
            continue
        value = data.get(spec.name)
        if value is None:
            if not spec.optional and spec.name not in may_omit:
                close = difflib.get_close_matches(spec.name, extra, n=1)
                errors.append(_err(f"missing data for '{spec.name}'", spec.line, spec.col,
                                   [f"the data has '{close[0]}', which the model does not "
                                    f"use: a misspelling of '{spec.name}'?"] if close else
                                   ["it is a required argument of the model; mark it optional "
                                    "with '?' to sample it instead"]))
            out[spec.name] = None
            continue
        try:
            t = _to_tensor(spec, value, dtype, device)
        except ValueError as e:
            errors.append(_err(f"data '{spec.name}': {e}", spec.line, spec.col))
            continue
        if t.dim() != len(spec.dims):
            want = f"[{', '.join(spec.dims)}]" if spec.dims else "a scalar"
            errors.append(_err(f"data '{spec.name}' has {t.dim()} dimension"
                               f"{'s' if t.dim() != 1 else ''} {list(t.shape)} but is declared "
                               f"{want}", spec.line, spec.col))
            continue
        msg = _bounds_problem(spec, t, _number(spec.lower), _number(spec.upper))
        if msg:
            errors.append(_err(f"data '{spec.name}' {msg}", spec.line, spec.col))
        out[spec.name] = t
        for axis, (dim_text, n) in enumerate(zip(spec.dims, t.shape, strict=False)):
            expr = sympy.sympify(dim_text, locals=syms)
            if expr.is_Symbol:
                prev = bound.get(str(expr))
                if prev is None:
                    bound[str(expr)] = (int(n), f"'{spec.name}' (dimension {axis})")
                    bound_by[str(expr)] = spec
                elif prev[0] != n:
                    first = bound_by[str(expr)]
                    errors.append(_err(
                        f"size {expr} is {prev[0]} from {prev[1]} but {n} from '{spec.name}' "
                        f"(dimension {axis})", spec.line, spec.col,
                        [f"'{first.name}' is declared at {first.line}:{first.col}"]
                        if first.line and first is not spec else None))
            else:
                pending.append((spec, axis, expr, int(n)))

    # Sizes given as data keys (posteriordb files carry N, J, K...)
    for name in sig.sizes:
        if name not in data or data[name] is None:
            continue
        spec = next((a for a in sig.args if a.name == name), None)
        # Point at the declaration of the size, else at the argument whose shape bound it,
        # else at the first whose shape names it (a size given only as a data key).
        where = spec or bound_by.get(name) or next(
            (a for a in sig.args if any(name in _names(d) for d in a.dims)), None)
        line, col = (where.line, where.col) if where else (0, 0)
        try:
            raw = np.asarray(data[name])
            # one number, not a list of one ([8]) nor true/false, as Stan reads a size
            if raw.ndim != 0 or raw.dtype.kind not in "iuf" or isinstance(data[name], bool):
                raise ValueError
            v = int(raw.item())
            if v != raw.item():
                raise ValueError
        except (ValueError, TypeError, OverflowError):  # 1e309 is inf: OverflowError
            errors.append(_err(f"size '{name}' (data key '{name}') must be an integer, got "
                               f"{data[name]!r}", line, col))
            continue
        prev = bound.get(name)
        if v > _MAX_SIZE:
            errors.append(_err(f"size '{name}' (data key '{name}') is {v}, more than a tensor "
                               f"dimension can hold ({_MAX_SIZE})", line, col))
            continue
        if v < 0:
            errors.append(_err(f"size '{name}' must be >= 0, got {v}", line, col))
            continue
        if prev is None:
            bound[name] = (v, f"data key '{name}'")
        elif prev[0] != v:
            errors.append(_err(f"size {name} is {prev[0]} from {prev[1]} but the data key "
                               f"'{name}' says {v}", line, col))

    # Composite dimensions (K + 1): check, or solve for a size bound nowhere else.
    for spec, axis, expr, n in pending:
        values = {syms[k]: v for k, (v, _) in bound.items() if k in syms}
        free = [s for s in expr.free_symbols if s not in values]
        if not free:
            exact = expr.subs(values)
            if not exact.is_integer:  # x: real[N / 2] with N = 5 (was cut to 2 elements)
                errors.append(_err(_not_whole(f"'{spec.name}' dimension {axis}", expr, exact),
                                   spec.line, spec.col, _size_notes(expr, bound)))
                continue
            want = int(exact)
            if want != n:
                notes = _size_notes(expr, bound)
                # "declared K + 1 = 4" names the sizes; a literal size is just itself
                said = f"{shown(expr)} = {want}" if expr.free_symbols else f"{want}"
                errors.append(_err(f"'{spec.name}' dimension {axis} is {n} but is declared "
                                   f"{said}", spec.line, spec.col, notes))
        elif len(free) == 1:
            sol = [s for s in sympy.solve(sympy.Eq(expr.subs(values), n), free[0])
                   if s.is_integer and s > 0]
            if sol:
                bound[str(free[0])] = (int(sol[0]), f"'{spec.name}' (dimension {axis})")
            else:
                errors.append(_err(f"no positive integer {free[0]} makes {shown(expr)} = {n} "
                                   f"for '{spec.name}'", spec.line, spec.col))

    for name in sig.sizes:
        if name not in bound and not errors:
            errors.append(_err(f"size '{name}' is not bound: no data argument given has it as a "
                               "dimension, and the data has no key of that name"))
    sizes_now = {syms[k]: v for k, (v, _) in bound.items() if k in syms}
    said: set = set()  # (line, sizes): one error per statement and pair of sizes
    for chk in sig.checks:
        left = sympy.sympify(chk.left, locals=syms).subs(sizes_now)
        right = sympy.sympify(chk.right, locals=syms).subs(sizes_now)
        pair = (chk.line, frozenset((str(chk.left), str(chk.right))))
        ok = left >= right if chk.at_least else left == right
        if left.is_number and right.is_number and not ok and pair not in said:
            # y in plate J is two checks (y against the plate, the density against y) of
            # one mistake, N = 3 but J = 2: its first is the error
            said.add(pair)
            names = [str(x) for side in (chk.left, chk.right)
                     for x in sorted(sympy.sympify(side, locals=syms).free_symbols, key=str)]
            notes = [f"{k} is {bound[k][0]} from {bound[k][1]}" for k in dict.fromkeys(names)
                     if k in bound]
            need = "but must be at least" if chk.at_least else "but"
            if chk.at_least and chk.right == "0":  # a shifted plate index at its first value
                if " slice " in chk.what or chk.what.startswith("the index "):
                    how = ("an index or a slice's start and stop written with sizes counts "
                           "from 0, as Stan's does (only a literal number, x[-1], x[:-1], "
                           "counts from the end): sizes that keep it >= 0, or count from "
                           "the dimension's size (x[N - K], x[:N - K] for all but the last "
                           "K)")
                else:
                    how = ("the plate reads it at its first index, 0: give the shifted "
                           "values their own name and plate, or sizes that keep it >= 0")
                errors.append(_err(f"{chk.what}: {chk.left} = {left} is negative, which torch "
                                   f"counts from the end (sizes from the data)", chk.line,
                                   chk.col, [*notes, how]))
                continue
            errors.append(_err(f"size mismatch between {chk.what}: {chk.left} = {left} {need} "
                               f"{chk.right} = {right} (sizes from the data)", chk.line, chk.col,
                               notes))

    # a latent's size from the data: Pyro's fits cannot start on a latent without elements
    # (the checker refuses a literal 0: 'z' has no elements)
    for name, (line, col, decl) in (drawn or {}).items():
        dims = decl.rsplit("[", 1)[1].rstrip("]").split(",") if decl.endswith("]") else []
        for dim in dims:
            try:
                expr = sympy.sympify(dim.strip(), locals=syms)
                value = expr.subs(sizes_now)
            except (sympy.SympifyError, TypeError, SyntaxError):
                break
            if value.is_number and not value.is_integer:
                errors.append(_err(_not_whole(f"latent '{name}'", expr, value), line, col,
                                   _size_notes(expr, bound)))
                break
            if value.is_number and value == 0:
                notes = _size_notes(expr, bound)
                errors.append(_err(f"latent '{name}' has no elements: {decl.split(': ', 1)[1]}"
                                   f" with {dim.strip()} = 0 (sizes from the data)", line, col,
                                   [*notes, "a latent needs at least one element: give the "
                                    "size a value of at least 1, or leave the latent out"]))
                break

    failed: set[str] = set()  # one error per argument: its first bad index
    for chk in sig.index_checks:
        t = out.get(chk.name)
        if t is None and chk.name in bound:  # a size read as an index
            t = torch.tensor(bound[chk.name][0])
        size = sympy.sympify(chk.size, locals=syms).subs(sizes_now)
        if chk.name in failed or t is None or not size.is_number or t.numel() == 0:
            continue
        problem = _index_problem(chk, t, int(size), sig)
        if problem is not None:
            failed.add(chk.name)
            errors.append(problem)

    # bounds named by another argument (real<lower=U>[N] with U: real[N]): elementwise,
    # once every argument and size is bound
    for spec in sig.args:
        t = out.get(spec.name)
        if not isinstance(t, torch.Tensor) or spec.name in sig.sizes:
            continue
        lo, hi = (_named_bound(b, out, bound, t) for b in (spec.lower, spec.upper))
        if lo is not None or hi is not None:
            msg = _bounds_problem(spec, t, lo, hi)
            if msg:
                errors.append(_err(f"data '{spec.name}' {msg}", spec.line, spec.col))

    if extra:
        warnings.warn(DataWarning(f"data keys not used by model {sig.name}: "
                                  f"{', '.join(extra)} (ignored)"),
                      stacklevel=2)
    if errors:
        text = source_text
        if text is None and sig.source and not sig.source.startswith("<"):
            try:
                with open(sig.source) as f:
                    text = f.read()
            except OSError:
                text = None
        # by position, as the checker reports (a size conflict is found after later args)
        errors.sort(key=lambda d: (d.span.line, d.span.col))
        raise BdlError(errors, sig.source, text)
    for name in sig.sizes:
        out[name] = bound[name][0]
    return out


def _index_problem(chk: IndexCheck, t: torch.Tensor, size: int,
                   sig: Signature) -> Diagnostic | None:
    """The error for the first value of ``t`` outside [0, size), else None."""
    t = t + chk.offset
    bad = (t < 0) | (t >= size)
    if not bool(bad.any()):
        return None
    at = tuple(int(i) for i in bad.nonzero()[0])
    v = int(t[at])
    where = f"{chk.name}[{', '.join(map(str, at))}]" if at else f"'{chk.name}'"
    shift = f" {'-' if chk.offset < 0 else '+'} {abs(chk.offset)}" if chk.offset else ""
    where += shift
    dim = f"{chk.size} = {size}" if chk.size != str(size) else f"{size}"
    what = f" of '{chk.what}'" if chk.what else ""
    spec = next((a for a in sig.args if a.name == chk.name), None)
    notes = [f"'{chk.name}' is declared at {spec.line}:{spec.col}"] if spec and spec.line \
        else []
    if v < 0:
        notes.append("a negative index is not read from the end in data (a 1-based file "
                     "converted with `- 1` turns a 0 into -1)")
    else:
        notes.append("indices are 0-based" + ("" if chk.offset else
                                              ": subtract 1 from a 1-based file once"))
    return _err(f"data '{chk.name}'{shift} indexes a dimension{what} of size {dim} but "
                f"{where} is {v}: an index must be in [0, {size})", chk.line, chk.col, notes)


def _number(b):
    return None if isinstance(b, str) else b


def _named_bound(b, out: dict, bound: dict, t: torch.Tensor):
    """The value of a bound named by another argument or a size, as a tensor that
    broadcasts to ``t``; None when it is a number, not given, or does not broadcast (a
    size check reports that)."""
    if not isinstance(b, str):
        return None
    v = out.get(b)
    if v is None and b in bound:
        v = bound[b][0]
    if v is None:
        return None
    v = torch.as_tensor(v, device=t.device)  # its own dtype: comparisons promote
    try:
        if torch.broadcast_shapes(v.shape, t.shape) != t.shape:
            return None
    except RuntimeError:
        return None
    return v


def _bounds_problem(spec: ArgSpec, t: torch.Tensor, lo=None, hi=None) -> str | None:
    """The first element of ``t`` outside its declared bounds ``lo``/``hi`` (numbers, or
    tensors named by ``spec.lower``/``spec.upper`` that broadcast to ``t``)."""
    if t.numel() == 0:
        return None
    for b, name, op, word in ((lo, spec.lower, ">=", "lower"), (hi, spec.upper, "<=", "upper")):
        if b is None:
            continue
        bad = t < b if word == "lower" else t > b
        if not bool(bad.any()):
            continue
        i = int(bad.flatten().nonzero()[0])
        got = f"element {i} is {t.flatten()[i].item():g}"
        if not isinstance(b, torch.Tensor):
            return f"must be {op} {b:g} (declared {word}={b:g}) but {got}"
        full = b.expand(t.shape)
        if b.numel() == 1:
            where = name
        else:  # the bound's own element: the value's index, right-aligned, 0 on a size-1 dim
            idx = [int(k) for k in torch.unravel_index(torch.tensor(i), t.shape)]
            idx = [0 if n == 1 else k for k, n in
                   zip(idx[t.dim() - b.dim():], b.shape, strict=True)]
            where = f"{name}[{', '.join(map(str, idx))}]"
        return (f"must be {op} {name} (declared {word}={name}) but {got} and {where} is "
                f"{full.flatten()[i].item():g}")
    return None
