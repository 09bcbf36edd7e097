"""Random BDL programs outside plates, against the checker's symbolic shapes and numpy.

`generate(seed)` builds a model over fixed data of symbolic sizes (`x: real[N]`,
`v: real[K]`, `u: real[M]`, `A: real[N, K]`, `B: real[K, M]`, `S: real[K, K]`,
`C: real[M, N]`, `g: int[N]` with values in 0..K-1, `h: int[M]` in 0..N-1) and one scalar
latent `z`, then a few locals `wI = expr`: elementwise functions, broadcasting arithmetic,
constant indexes, slices with symbolic ends (`e[1:N]`, `e[:K - 1]`, `e[:, 1:]`, `e[K - 3:]`;
with `bad` > 0 also ends negative at some sizes, `e[K - 4:]`, `e[:3 - K]`), int
gathers (`v[g]`), reductions with and without `dim=`, `cumsum`/`softmax`/`sort`, `@`,
`transpose`, `stack`/`cat` with `dim=`, list literals, `outer`, `diag`, `tril`, `eye`,
`zeros`, `ones`, `arange`, `where`, `clamp`, `pow`, `diag_pre_multiply` and its kin, and
`cholesky`/`logdet`/`solve` of a positive-definite matrix made from the data. A local
that reads `z` (or such a local) is a deterministic site; one from data alone is
transformed data.

`Program.numpy(sizes, data, z)` is a hand-written numpy version (torch's semantics,
docs/language.md "Built-in functions"): every local's value, or the error numpy raises.
Most operands are generated to fit; with `bad` > 0 some are not, so the sweep also has
programs that must be refused.

`compare(program, seed)` compiles the program, reads every local's inferred shape from
the checked model (`CheckedModel.symbols[name].ty.shape`), substitutes three sets of
sizes (two with unequal sizes, one with all sizes equal, where a swapped dim runs), runs
the generated Pyro model under `pyro.poutine.trace` (deterministic sites; transformed
data come back from `Model.bind`), and sorts what it finds into statuses (`STATUSES`).
"""

from __future__ import annotations

import random

import numpy as np
from scipy import special

SIZE_SETS = ({"N": 7, "K": 3, "M": 5}, {"N": 9, "K": 4, "M": 13}, {"N": 4, "K": 4, "M": 4})
NAMES = ("N", "K", "M")
DATA = {  # name: (shape, kind)
    "x": (("N",), "real"), "v": (("K",), "real"), "u": (("M",), "real"),
    "A": (("N", "K"), "real"), "B": (("K", "M"), "real"), "S": (("K", "K"), "real"),
    "C": (("M", "N"), "real"), "g": (("N",), "int"), "h": (("M",), "int"),
}
GATHER = {"g": ("N", "K"), "h": ("M", "N")}  # int data: its size, the size it indexes

# Statuses of compare(): the first four are fine.
OK = ("agree", "refused", "refused_run")
STATUSES = OK + (
    "false_refusal",      # refused at check, but numpy runs it at the unequal sizes
    "false_run_refusal",  # a BdlError at run time where numpy runs
    "missed_refusal",     # accepted and ran, but numpy raises at these sizes
    "torch_refusal",      # accepted at check, then torch raised (located) where numpy does
    "raw_error",          # a Python/torch exception, not a located BdlError
    "wrong_shape",        # the checker's shape at these sizes is not numpy's
    "wrong_run_shape",    # the value BDL computes has another shape than numpy's
    "wrong_value",        # same shape, other numbers
    "wrong_kind",         # checker's kind (real/int/bool) is not the value's dtype
    "missing_local",      # a local is neither a deterministic site nor transformed data
)


# ---------------------------------------------------------------- sizes as polynomials
# A dim is a dict {monomial (sorted tuple of size names): int coefficient}, so that
# N - 1 + 1 is N, and equality is exact.

def dim(name_or_int) -> dict:
    if isinstance(name_or_int, int):
        return {(): name_or_int} if name_or_int else {}
    return {(name_or_int,): 1}


def dim_add(a: dict, b: dict, sign: int = 1) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + sign * v
    return {k: v for k, v in out.items() if v}


def dim_key(d: dict):
    return tuple(sorted(d.items()))


def dim_source(d: dict) -> str:
    parts = []
    for mono, coef in sorted(d.items(), key=lambda kv: (-len(kv[0]), kv[0])):
        body = " * ".join(mono)
        if not mono:
            text = str(abs(coef))
        elif abs(coef) == 1:
            text = body
        else:
            text = f"{abs(coef)} * {body}"
        if not parts:
            parts.append(("-" if coef < 0 else "") + text)
        else:
            parts.append(("- " if coef < 0 else "+ ") + text)
    return " ".join(parts) if parts else "0"


def dim_at(d: dict, sizes: dict) -> int:
    total = 0
    for mono, coef in d.items():
        term = coef
        for n in mono:
            term *= sizes[n]
        total += term
    return total


def same(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(dim_key(x) == dim_key(y) for x, y in zip(a, b, strict=True))


def shape_at(shape, sizes) -> tuple:
    return tuple(dim_at(d, sizes) for d in shape)


# ---------------------------------------------------------------- expressions

class Expr:
    def children(self):
        return []


class Lit(Expr):
    def __init__(self, value):
        self.value = value

    def source(self):
        return repr(self.value)

    def numpy(self, env):
        return np.float64(self.value)


class Var(Expr):
    def __init__(self, name):
        self.name = name

    def source(self):
        return self.name

    def numpy(self, env):
        return env[self.name]


class Size(Expr):
    """A size expression used as a value argument (eye(N), zeros(N, K - 1))."""

    def __init__(self, d):
        self.d = d

    def source(self):
        return dim_source(self.d)

    def numpy(self, env):
        return dim_at(self.d, env["__sizes__"])


def _wrap(e: Expr) -> str:
    s = e.source()
    return s if isinstance(e, (Var, Call, Index, ListLit, Lit)) else f"({s})"


class BinOp(Expr):
    def __init__(self, op, left, right):
        self.op, self.left, self.right = op, left, right

    def source(self):
        return f"{_wrap(self.left)} {self.op} {_wrap(self.right)}"

    def numpy(self, env):
        a, b = self.left.numpy(env), self.right.numpy(env)
        if self.op == "@":
            a, b = np.asarray(a), np.asarray(b)
            if a.ndim == 0 or b.ndim == 0:
                raise ValueError("matmul of a scalar")
            return np.matmul(a, b)
        a, b = np.asarray(a, float), np.asarray(b, float)
        np.broadcast_shapes(a.shape, b.shape)  # raises where torch's broadcast does
        with np.errstate(all="ignore"):
            return {"+": np.add, "-": np.subtract, "*": np.multiply,
                    "/": np.divide}[self.op](a, b)

    def children(self):
        return [self.left, self.right]


class Compare(Expr):
    def __init__(self, op, left, right):
        self.op, self.left, self.right = op, left, right

    def source(self):
        return f"{_wrap(self.left)} {self.op} {_wrap(self.right)}"

    def numpy(self, env):
        a, b = np.asarray(self.left.numpy(env)), np.asarray(self.right.numpy(env))
        np.broadcast_shapes(a.shape, b.shape)
        return a > b if self.op == ">" else a < b

    def children(self):
        return [self.left, self.right]


# An index item: ('c', k) a constant, ('s', start, stop) a slice with start/stop each None,
# an int or a dim dict (written as a size expression), ('g', name) an int data gather.

def _bound_source(b) -> str:
    if b is None:
        return ""
    if isinstance(b, int):
        return str(b)
    return dim_source(b)


def _bound_value(b, sizes):
    if b is None or isinstance(b, int):
        return b
    return dim_at(b, sizes)


class Index(Expr):
    def __init__(self, base, items):
        self.base, self.items = base, list(items)

    def source(self):
        parts = []
        for it in self.items:
            if it[0] == "c":
                parts.append(str(it[1]))
            elif it[0] == "s":
                parts.append(f"{_bound_source(it[1])}:{_bound_source(it[2])}")
            else:
                parts.append(it[1])
        return f"{_wrap(self.base)}[{', '.join(parts)}]"

    def numpy(self, env):
        value = np.asarray(self.base.numpy(env))
        sizes = env["__sizes__"]
        key = []
        for it in self.items:
            if it[0] == "c":
                key.append(it[1])
            elif it[0] == "s":
                ends = [_bound_value(b, sizes) for b in it[1:]]
                if any(isinstance(b, dict) and e < 0 for b, e in zip(it[1:], ends,
                                                                     strict=True)):
                    # Stan's: only a literal negative number counts from the end
                    raise IndexError(f"a slice end of sizes is negative: {ends}")
                key.append(slice(*ends))
            else:
                key.append(env[it[1]])
        if len(key) > value.ndim:
            raise IndexError("too many indices")
        for k, n in zip(key, value.shape, strict=False):
            if isinstance(k, int) and not -n <= k < n:
                raise IndexError(f"index {k} out of range for size {n}")
            if isinstance(k, np.ndarray) and k.size and not (-n <= k.min() and k.max() < n):
                raise IndexError(f"gather out of range for size {n}")
            if isinstance(k, slice):  # Stan's: a slice past the end is an error, not cut
                lo, hi = (n + b if b is not None and b < 0 else b for b in (k.start, k.stop))
                lo, hi = lo or 0, n if hi is None else hi
                if hi > n or lo > hi:
                    raise IndexError(f"slice {lo}:{hi} out of range for size {n}")
        return value[tuple(key)]

    def children(self):
        return [self.base]


class ListLit(Expr):
    def __init__(self, items):
        self.items = items

    def source(self):
        return "[" + ", ".join(i.source() for i in self.items) + "]"

    def numpy(self, env):
        vals = [np.asarray(i.numpy(env), float) for i in self.items]
        shape = np.broadcast_shapes(*(v.shape for v in vals))
        return np.stack([np.broadcast_to(v, shape) for v in vals])

    def children(self):
        return list(self.items)


def _softplus(a):
    return np.logaddexp(0.0, a)


def _elu(a):
    return np.where(a > 0, a, np.expm1(np.minimum(a, 0)))


ELEMENTWISE = {"exp": np.exp, "tanh": np.tanh, "sigmoid": special.expit,
               "softplus": _softplus, "abs": np.abs, "square": np.square, "sin": np.sin,
               "cos": np.cos, "log1p": np.log1p, "sqrt": np.sqrt, "relu": lambda a: np.maximum(
                   a, 0.0), "erf": special.erf, "floor": np.floor, "round": np.round,
               "normal_cdf": special.ndtr, "elu": _elu, "gelu": lambda a: a * special.ndtr(a),
               "lgamma": special.gammaln, "digamma": special.digamma}
POSITIVE = ("log1p", "sqrt", "lgamma", "digamma")  # given abs(x) + 1
REDUCTIONS = ("sum", "mean", "max", "min", "prod", "logsumexp", "sd", "variance")
ALONG = ("cumsum", "cumprod", "softmax", "log_softmax")


def _axis(dim_arg, ndim):
    if ndim == 0 and dim_arg in (0, -1):  # torch takes dim 0 or -1 of a 0-d tensor
        return None
    if not -ndim <= dim_arg < ndim:
        raise IndexError(f"dim {dim_arg} out of range for rank {ndim}")
    return dim_arg % ndim


def _reduce(name, a, axis):
    a = np.asarray(a, float)
    if name in ("sd", "variance"):
        n = a.size if axis is None else a.shape[axis]
        if n <= 1:
            out = np.zeros(() if axis is None else np.delete(a.shape, axis))
            return out
        var = np.var(a, axis=axis, ddof=1)
        return np.sqrt(var) if name == "sd" else var
    if name == "logsumexp":
        return special.logsumexp(a, axis=axis)
    if name in ("max", "min") and a.size == 0:
        raise ValueError("max of nothing")
    return {"sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min,
            "prod": np.prod}[name](a, axis=axis)


class Call(Expr):
    def __init__(self, fn, args, kwargs=None):
        self.fn, self.args, self.kwargs = fn, list(args), dict(kwargs or {})

    def source(self):
        parts = [a.source() for a in self.args]
        parts += [f"{k}={v.source() if isinstance(v, Expr) else v}"
                  for k, v in self.kwargs.items()]
        return f"{self.fn}({', '.join(parts)})"

    def children(self):
        return [a for a in self.args] + [v for v in self.kwargs.values() if isinstance(v, Expr)]

    def numpy(self, env):
        fn = self.fn
        if fn in ("eye", "zeros", "ones", "arange"):
            ns = [a.numpy(env) for a in self.args]
            if fn == "eye":
                return np.eye(ns[0])
            if fn == "arange":
                return np.arange(ns[0])
            return (np.zeros if fn == "zeros" else np.ones)(tuple(ns))
        if fn in ("stack", "cat"):
            vals = [np.asarray(i.numpy(env), float) for i in self.args[0].items]
            d = self.kwargs.get("dim", 0)
            if fn == "stack":  # rt.stack: the items broadcast together first
                shape = np.broadcast_shapes(*(v.shape for v in vals))
                vals = [np.broadcast_to(v, shape) for v in vals]
                return np.stack(vals, axis=_axis(d, len(shape) + 1))
            if d >= 0:
                if min(v.ndim for v in vals) == 0:
                    raise ValueError("cat of a number")
                if len({v.ndim for v in vals}) > 1:
                    raise ValueError("cat of unequal ranks")
                return np.concatenate(vals, axis=_axis(d, vals[0].ndim))
            # rt.cat along a dim from the right: the other dims broadcast first
            rank = max(v.ndim for v in vals)
            if rank == 0:
                raise ValueError("cat of numbers")
            vals = [v.reshape((1,) * (rank - v.ndim) + v.shape) for v in vals]
            at = _axis(d, rank)
            rest = np.broadcast_shapes(*(v.shape[:at] + (1,) + v.shape[at + 1:] for v in vals))
            vals = [np.broadcast_to(v, rest[:at] + v.shape[at:at + 1] + rest[at + 1:])
                    for v in vals]
            return np.concatenate(vals, axis=at)
        a = self.args[0].numpy(env)
        if fn in ELEMENTWISE:
            with np.errstate(all="ignore"):
                return ELEMENTWISE[fn](np.asarray(a, float))
        if fn in REDUCTIONS:
            a = np.asarray(a, float)
            d = self.kwargs.get("dim")
            if fn == "logsumexp" and d is None:
                d = -1
            if d is None:
                return _reduce(fn, a, None)
            return _reduce(fn, a, _axis(d, a.ndim))
        if fn in ALONG:
            a = np.asarray(a, float)
            ax = _axis(self.kwargs.get("dim", -1), a.ndim)
            shape = a.shape
            if ax is None:
                a, ax = a.reshape(1), 0
            with np.errstate(all="ignore"):
                out = {"cumsum": np.cumsum, "cumprod": np.cumprod, "softmax": special.softmax,
                       "log_softmax": special.log_softmax}[fn](a, axis=ax)
            return out.reshape(shape)
        if fn in ("sort", "reverse"):
            a = np.asarray(a, float)
            if a.ndim == 0:
                raise IndexError("sort of a scalar")
            return np.sort(a, axis=-1) if fn == "sort" else a[..., ::-1]
        if fn == "transpose":
            a = np.asarray(a)
            if a.ndim < 2:
                raise ValueError("transpose of a vector")
            return np.swapaxes(a, -1, -2)
        if fn == "matmul":
            return BinOp("@", self.args[0], self.args[1]).numpy(env)
        if fn == "outer":
            b = np.asarray(self.args[1].numpy(env), float)
            a = np.asarray(a, float)
            if a.ndim != 1 or b.ndim != 1:
                raise ValueError("outer of non-vectors")
            return np.outer(a, b)
        if fn == "diag":
            a = np.asarray(a, float)
            if a.ndim == 0:
                raise ValueError("diag of a scalar")
            out = np.zeros(a.shape + a.shape[-1:])
            idx = np.arange(a.shape[-1])
            out[..., idx, idx] = a
            return out
        if fn == "tril":
            a = np.asarray(a, float)
            if a.ndim < 2:
                raise ValueError("tril of a vector")
            return np.tril(a)
        if fn == "where":
            c = np.asarray(a)
            x = np.asarray(self.args[1].numpy(env), float)
            y = np.asarray(self.args[2].numpy(env), float)
            np.broadcast_shapes(c.shape, x.shape, y.shape)
            return np.where(c, x, y)
        if fn == "pow":
            b = np.asarray(self.args[1].numpy(env), float)
            np.broadcast_shapes(np.shape(a), b.shape)
            with np.errstate(all="ignore"):
                return np.power(np.asarray(a, float), b)
        if fn in ("diag_pre_multiply", "diag_post_multiply", "quad_form_diag"):
            b = np.asarray(self.args[1].numpy(env), float)
            m, vec = (b, np.asarray(a, float)) if fn == "diag_pre_multiply" else (
                np.asarray(a, float), b)
            if m.ndim != 2 or vec.ndim != 1:
                raise ValueError(f"{fn} of a matrix and a vector")
            rows = vec[:, None] if fn != "diag_post_multiply" else 1.0
            cols = vec[None, :] if fn != "diag_pre_multiply" else 1.0
            np.broadcast_shapes(m.shape, np.shape(rows), np.shape(cols))
            return m * rows * cols
        if fn == "cholesky":
            return np.linalg.cholesky(np.asarray(a, float))
        if fn == "logdet":
            return np.asarray(np.linalg.slogdet(np.asarray(a, float))[1])
        if fn == "solve":
            b = np.asarray(self.args[1].numpy(env), float)
            a = np.asarray(a, float)
            if b.ndim == 1:
                return np.linalg.solve(a, b[:, None])[:, 0]
            return np.linalg.solve(a, b)
        if fn == "clamp":
            lo = self.kwargs["min"].numpy(env)
            return np.maximum(np.asarray(a, float), lo)
        raise ValueError(f"no numpy for {fn}")


def walk(e: Expr):
    yield e
    for c in e.children():
        yield from walk(c)


# ---------------------------------------------------------------- the generator

class Typed:
    """An expression with the generator's own idea of its shape and kind."""

    def __init__(self, expr, shape, kind="real", random=False):
        self.expr, self.shape, self.kind, self.random = expr, tuple(shape), kind, random


def _shape_of(names) -> tuple:
    return tuple(dim(n) for n in names)


def signed_slices(n: dict, bad: bool) -> list:
    """(start, stop, length) of slices of a dim n whose start or stop is a difference of
    sizes: ``K - 3``, >= 0 at every size set here (0 at K = 3), and with ``bad`` ones
    negative at some, which Python would read from the end and BDL must refuse at
    binding (``x[K - 4:]`` at K = 3, ``x[:3 - K]`` at K = 4)."""
    k = dim("K")
    out = [(dim_add(k, dim(-3)), None, dim_add(n, dim_add(dim(3), k, -1)))]
    if bad:
        out.append((dim_add(k, dim(-4)), None, dim_add(n, dim_add(dim(4), k, -1))))
        out.append((None, dim_add(dim(3), k, -1), dim_add(dim(3), k, -1)))
    return out


def signed_slice_programs(name: str) -> list:
    """One-line programs ``w1 = name[...]`` of every slice of :func:`signed_slices` along
    each dim of the data ``name``: (program, whether its ends are >= 0 at every size
    set)."""
    shape = _shape_of(DATA[name][0])
    out = []
    for axis, n in enumerate(shape):
        for start, stop, length in signed_slices(n, True):
            items = [("s", None, None)] * axis + [("s", start, stop)]
            typed = Typed(Index(Var(name), items), shape[:axis] + (length,) + shape[axis + 1:])
            fits = all(dim_at(b, sizes) >= 0 for b in (start, stop) if b is not None
                       for sizes in SIZE_SETS)
            out.append((Program([("w1", typed)]), fits))
    return out


class Generator:
    def __init__(self, seed, bad=0.0, max_rank=3):
        self.rng = random.Random(seed)
        self.bad = bad
        self.max_rank = max_rank
        self.env = {name: Typed(Var(name), _shape_of(shape), kind)
                    for name, (shape, kind) in DATA.items()}
        self.env["z"] = Typed(Var("z"), (), "real", random=True)
        self.features = set()

    # -- helpers
    def pick(self, seq):
        return self.rng.choice(list(seq))

    def leaf(self) -> Typed:
        r = self.rng.random()
        if r < 0.1:
            return Typed(Lit(round(self.rng.uniform(0.5, 2.0), 1)), ())
        name = self.pick(n for n, t in self.env.items() if t.kind == "real")
        return self.env[name]

    def shaped(self, shape, depth) -> Typed:
        """An expression of exactly `shape` (rejection from random ones, then a fallback)."""
        for _ in range(25):
            t = self.expr(depth)
            if same(t.shape, shape) and t.kind == "real":
                return t
        for t in self.env.values():
            if same(t.shape, shape) and t.kind == "real" and self.rng.random() < 0.7:
                return t
        if not shape:
            return Typed(Lit(1.5), ())
        self.features.add("ones")
        return Typed(Call("ones", [Size(d) for d in shape]), shape)

    def partner(self, t: Typed, depth) -> Typed:
        """A broadcasting partner of `t` (or, with probability `bad`, anything)."""
        if self.rng.random() < self.bad:
            self.features.add("bad")
            return self.expr(depth)
        r = self.rng.random()
        if r < 0.2 or not t.shape:
            return self.shaped((), depth)
        if r < 0.65:
            return self.shaped(t.shape, depth)
        k = self.rng.randint(1, len(t.shape))
        return self.shaped(t.shape[-k:], depth)

    # -- the expression grammar
    def expr(self, depth) -> Typed:
        if depth <= 0:
            return self.leaf()
        ops = ["leaf", "fn", "binop", "binop", "index", "slice", "reduce", "along", "matmul",
               "transpose", "stack", "cat", "list", "outer", "diag", "make", "where",
               "gather", "sort", "clamp", "pow", "scale", "linalg"]
        op = self.pick(ops)
        d = depth - 1
        if op == "leaf":
            return self.leaf()
        if op == "fn":
            t = self.expr(d)
            fn = self.pick(ELEMENTWISE)
            if fn in POSITIVE:
                inner = BinOp("+", Call("abs", [t.expr]), Lit(1.0))
                self.features.add("fn")
                return Typed(Call(fn, [inner]), t.shape, random=t.random)
            self.features.add("fn")
            return Typed(Call(fn, [t.expr]), t.shape, random=t.random)
        if op == "binop":
            t = self.expr(d)
            o = self.partner(t, d)
            if self.rng.random() < 0.5:
                t, o = o, t
            shape = _broadcast(t.shape, o.shape)
            self.features.add("binop")
            return Typed(BinOp(self.pick("+-*/"), t.expr, o.expr), shape or t.shape,
                         random=t.random or o.random)
        if op == "index":
            t = self.expr(d)
            if not t.shape:
                return t
            self.features.add("index")
            if len(t.shape) >= 2 and self.rng.random() < 0.4:
                k = self.pick((0, 1, -1))
                return Typed(Index(t.expr, [("s", None, None), ("c", k)]),
                             t.shape[:1] + t.shape[2:], t.kind, t.random)
            k = self.pick((0, 1, -1, 2))
            return Typed(Index(t.expr, [("c", k)]), t.shape[1:], t.kind, t.random)
        if op == "slice":
            t = self.expr(d)
            if not t.shape:
                return t
            self.features.add("slice")
            axis = 0 if len(t.shape) == 1 or self.rng.random() < 0.6 else 1
            n = t.shape[axis]
            start, stop, length = self._slice(n)
            items = [("s", None, None)] * axis + [("s", start, stop)]
            shape = t.shape[:axis] + (length,) + t.shape[axis + 1:]
            return Typed(Index(t.expr, items), shape, t.kind, t.random)
        if op == "gather":
            name = self.pick(GATHER)
            size, indexed = GATHER[name]
            cands = [v for v in self.env.values()
                     if v.shape and dim_key(v.shape[0]) == dim_key(dim(indexed))
                     and v.kind == "real"]
            if not cands:
                return self.leaf()
            t = self.pick(cands)
            self.features.add("gather")
            return Typed(Index(t.expr, [("g", name)]), (dim(size),) + t.shape[1:], t.kind,
                         t.random)
        if op == "reduce":
            t = self.expr(d)
            fn = self.pick(REDUCTIONS)
            self.features.add("reduce")
            if t.shape and self.rng.random() < 0.6:
                k = self.rng.randrange(-len(t.shape), len(t.shape))
                self.features.add("reduce_dim")
                ax = k % len(t.shape)
                return Typed(Call(fn, [t.expr], {"dim": k}), t.shape[:ax] + t.shape[ax + 1:],
                             random=t.random)
            if fn == "logsumexp":
                if not t.shape:
                    return Typed(Call(fn, [t.expr]), (), random=t.random)
                return Typed(Call(fn, [t.expr]), t.shape[:-1], random=t.random)
            return Typed(Call(fn, [t.expr]), (), random=t.random)
        if op == "along":
            t = self.expr(d)
            if not t.shape:
                return t
            fn = self.pick(ALONG)
            self.features.add("along")
            kw = {}
            if self.rng.random() < 0.6:
                kw = {"dim": self.rng.randrange(-len(t.shape), len(t.shape))}
            return Typed(Call(fn, [t.expr], kw), t.shape, random=t.random)
        if op == "sort":
            t = self.expr(d)
            if not t.shape:
                return t
            self.features.add("sort")
            return Typed(Call(self.pick(("sort", "reverse")), [t.expr]), t.shape, t.kind,
                         t.random)
        if op == "matmul":
            t = self.expr(d)
            if not t.shape or len(t.shape) > 2:
                return t
            self.features.add("matmul")
            inner = t.shape[-1]
            if self.rng.random() < self.bad:
                o = self.expr(d)
            else:
                right = self.pick([(), (dim("N"),), (dim("K"),), (dim("M"),)])
                o = self.shaped((inner,) + right, d)
            if not o.shape:
                return t
            shape = _matmul(t.shape, o.shape) or ()
            if self.rng.random() < 0.3:
                e = Call("matmul", [t.expr, o.expr])
            else:
                e = BinOp("@", t.expr, o.expr)
            return Typed(e, shape, random=t.random or o.random)
        if op == "transpose":
            t = self.expr(d)
            if len(t.shape) < 2:
                return t
            self.features.add("transpose")
            return Typed(Call("transpose", [t.expr]), t.shape[:-2] + (t.shape[-1], t.shape[-2]),
                         t.kind, t.random)
        if op in ("stack", "cat", "list"):
            t = self.expr(d)
            if len(t.shape) >= self.max_rank or (op == "cat" and not t.shape):
                return t
            o = self.partner(t, d) if op == "list" else (
                self.expr(d) if self.rng.random() < self.bad else self.shaped(t.shape, d))
            self.features.add(op)
            if op == "list":
                shape = _broadcast(t.shape, o.shape) or t.shape
                return Typed(ListLit([t.expr, o.expr]), (dim(2),) + shape,
                             random=t.random or o.random)
            rank = len(t.shape) + (op == "stack")
            k = self.rng.randrange(-rank, rank)
            ax = k % rank
            if op == "stack":
                shape = t.shape[:ax] + (dim(2),) + t.shape[ax:]
            else:
                if self.rng.random() < 0.5 and len(t.shape) == 1:
                    # cat of two vectors of different sizes: x and u is [N + M]
                    o = self.pick([v for v in self.env.values()
                                   if len(v.shape) == 1 and v.kind == "real"])
                    shape = (dim_add(t.shape[0], o.shape[0]),)
                else:
                    shape = (t.shape[:ax] + (dim_add(t.shape[ax], o.shape[ax] if len(
                        o.shape) == len(t.shape) else t.shape[ax]),) + t.shape[ax + 1:])
            kw = {"dim": k} if (k != 0 or self.rng.random() < 0.5) else {}
            return Typed(Call(op, [ListLit([t.expr, o.expr])], kw), shape,
                         random=t.random or o.random)
        if op == "outer":
            a = self.shaped((dim(self.pick(NAMES)),), d)
            b = self.shaped((dim(self.pick(NAMES)),), d)
            self.features.add("outer")
            return Typed(Call("outer", [a.expr, b.expr]), a.shape + b.shape,
                         random=a.random or b.random)
        if op == "diag":
            t = self.expr(d)
            if len(t.shape) == 1:
                self.features.add("diag")
                return Typed(Call("diag", [t.expr]), t.shape + t.shape, random=t.random)
            if len(t.shape) == 2:
                self.features.add("tril")
                return Typed(Call("tril", [t.expr]), t.shape, random=t.random)
            return t
        if op == "make":
            self.features.add("make")
            fn = self.pick(("eye", "zeros", "ones", "arange"))
            n = self._size()
            if fn == "eye":
                return Typed(Call("eye", [Size(n)]), (n, n))
            if fn == "arange":
                return Typed(Call("arange", [Size(n)]), (n,), "int")
            shape = (n,) if self.rng.random() < 0.5 else (n, self._size())
            return Typed(Call(fn, [Size(s) for s in shape]), shape)
        if op == "where":
            t = self.expr(d)
            o = self.partner(t, d)
            c = self.partner(t, d)
            self.features.add("where")
            shape = _broadcast(_broadcast(t.shape, o.shape) or t.shape, c.shape) or t.shape
            return Typed(Call("where", [Compare(">", c.expr, Lit(0.0)), t.expr, o.expr]), shape,
                         random=t.random or o.random or c.random)
        if op == "pow":
            t = self.expr(d)
            self.features.add("pow")
            return Typed(Call("pow", [Call("abs", [t.expr]), Lit(self.pick((2.0, 0.5)))]),
                         t.shape, random=t.random)
        if op == "scale":  # diag_pre_multiply(v, M), diag_post_multiply(M, v), quad_form_diag
            t = self.expr(d)
            if len(t.shape) != 2:
                return t
            self.features.add("scale")
            fn = self.pick(("diag_pre_multiply", "diag_post_multiply", "quad_form_diag"))
            if fn == "quad_form_diag" and not same(t.shape[:1], t.shape[1:]):
                fn = "diag_post_multiply"
            n = t.shape[0] if fn == "diag_pre_multiply" else t.shape[1]
            vec = self.expr(d) if self.rng.random() < self.bad else self.shaped((n,), d)
            args = [vec.expr, t.expr] if fn == "diag_pre_multiply" else [t.expr, vec.expr]
            return Typed(Call(fn, args), t.shape, random=t.random or vec.random)
        if op == "linalg":  # of a positive-definite matrix made from data
            name = self.pick(NAMES)
            spd = {"K": "S @ transpose(S)", "N": "A @ transpose(A)",
                   "M": "transpose(B) @ B"}[name]
            left, right = spd.split(" @ ")
            p = BinOp("+", BinOp("@", _raw(left), _raw(right)), Call("eye", [Size(dim(name))]))
            n = dim(name)
            self.features.add("linalg")
            fn = self.pick(("cholesky", "logdet", "solve"))
            if fn == "cholesky":
                return Typed(Call(fn, [p]), (n, n))
            if fn == "logdet":
                return Typed(Call(fn, [p]), ())
            rhs = self.shaped(self.pick([(n,), (n, dim(self.pick(NAMES)))]), d)
            return Typed(Call(fn, [p, rhs.expr]), rhs.shape, random=rhs.random)
        if op == "clamp":
            t = self.expr(d)
            self.features.add("clamp")
            return Typed(Call("clamp", [t.expr], {"min": Lit(0.0)}), t.shape, random=t.random)
        raise AssertionError(op)

    def _size(self):
        n = dim(self.pick(NAMES))
        r = self.rng.random()
        if r < 0.2:
            return dim_add(n, dim(1))
        if r < 0.3:
            return dim_add(n, dim(self.pick(NAMES)))
        return n

    def _slice(self, n):
        """(start, stop, length) of a slice of a dim n: symbolic ends and literal ones."""
        choices = [
            (1, None, dim_add(n, dim(-1))),
            (None, -1, dim_add(n, dim(-1))),
            (1, n, dim_add(n, dim(-1))),
            (0, dim_add(n, dim(-1)), dim_add(n, dim(-1))),
            (None, dim_add(n, dim(-2)), dim_add(n, dim(-2))),
            (2, None, dim_add(n, dim(-2))),
            (None, 2, dim(2)),
            (-2, None, dim(2)),
            (1, 3, dim(2)),
            (None, None, n),
        ]
        choices += signed_slices(n, bool(self.bad))
        if len(n) == 1 and list(n.values())[0] == 1 and () not in n:
            # a slice by another size that fits in every size set here: K <= N, M
            name = next(iter(n))[0]
            if name in ("N", "M"):
                choices.append((None, dim("K"), dim("K")))
                choices.append((1, dim_add(dim("K"), dim(1)), dim("K")))
        return self.pick(choices)

    def program(self, n_locals=None):
        statements = []
        n_locals = n_locals or self.rng.randint(2, 5)
        for i in range(n_locals):
            t = self.expr(self.rng.randint(1, 3))
            name = f"w{i + 1}"
            random_ = any(isinstance(e, Var) and self.env.get(e.name, None) is not None
                          and self.env[e.name].random for e in walk(t.expr))
            statements.append((name, t))
            self.env[name] = Typed(Var(name), t.shape, t.kind, random_)
        return Program(statements, self.features)


def _raw(text):
    """`transpose(S)` or a data name as an expression (for the generator's fixed forms)."""
    if text.startswith("transpose("):
        return Call("transpose", [Var(text[len("transpose("):-1])])
    return Var(text)


def _broadcast(a, b):
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else None
        y = b[-i] if i <= len(b) else None
        if x is None:
            out.append(y)
        elif y is None or dim_key(x) == dim_key(y):
            out.append(x)
        elif dim_key(y) == dim_key(dim(1)):
            out.append(x)
        elif dim_key(x) == dim_key(dim(1)):
            out.append(y)
        else:
            return None
    return tuple(reversed(out))


def _matmul(a, b):
    if len(a) == 1 and len(b) == 1:
        return ()
    if len(a) == 1:
        return b[:-2] + b[-1:]
    if len(b) == 1:
        return a[:-1]
    batch = _broadcast(a[:-2], b[:-2])
    return None if batch is None else batch + (a[-2], b[-1])


# ---------------------------------------------------------------- programs

class Program:
    def __init__(self, statements, features=()):
        self.statements = statements  # [(name, Typed)]
        self.feature_set = set(features)

    def features(self):
        """The generator's features, and (read off the program itself) whether a slice
        starts or stops at a difference of sizes: >= 0 at every size set ("slice_sizes",
        K - 3), or negative at some ("slice_negative", K - 4, 3 - K)."""
        out = set(self.feature_set)
        for _, t in self.statements:
            for e in walk(t.expr):
                for it in e.items if isinstance(e, Index) else ():
                    for b in it[1:] if it[0] == "s" else ():
                        if isinstance(b, dict) and len(b) > 1:
                            low = min(dim_at(b, sizes) for sizes in SIZE_SETS)
                            out.add("slice_sizes" if low >= 0 else "slice_negative")
        return out

    def source(self):
        args = ", ".join(f"{n}: {k}[{', '.join(s)}]" for n, (s, k) in DATA.items())
        lines = [f"model Shapes({args}) {{", "  z ~ Normal(0, 1)"]
        lines += [f"  {name} = {t.expr.source()}" for name, t in self.statements]
        lines.append("}")
        return "\n".join(lines) + "\n"

    def numpy(self, sizes, data, z):
        """Every local's value ({name: array}), or raise where numpy (torch) would."""
        env = dict(data)
        env["z"] = np.float64(z)
        env["__sizes__"] = sizes
        out = {}
        for name, t in self.statements:
            value = np.asarray(t.expr.numpy(env))
            env[name] = out[name] = value
        return out


def data_for(sizes, seed):
    rs = np.random.RandomState(seed)
    data = {}
    for name, (shape, kind) in DATA.items():
        concrete = tuple(sizes[s] for s in shape)
        if kind == "int":
            data[name] = rs.randint(0, sizes[GATHER[name][1]], size=concrete)
        else:
            data[name] = rs.normal(size=concrete)
    return data


def generate(seed, bad=0.0) -> Program:
    return Generator(seed, bad=bad).program()


# ---------------------------------------------------------------- comparison

def checker_shape(ty, sizes):
    """The checker's symbolic shape of a type at concrete sizes, or None if unknown."""
    from ppl.check import sizes as psizes

    if ty.shape is None:
        return None
    out = []
    for d in ty.shape:
        d = psizes.Dim._of(d)
        total = 0
        for mono, coef in d.terms.items():
            term = coef
            for n in mono:
                if n not in sizes:
                    return None
                term *= sizes[n]
            total += term
        out.append(int(total))
    return tuple(out)


_KINDS = {"real": "f", "int": "iu", "bool": "b"}


def run_once(model, program, sizes, seed):
    """Bind data at `sizes` and run the model under a trace: ({local: tensor}, z) or raise."""
    import pyro

    from ppl import locate
    from ppl.infer.run import torch_defaults

    data = data_for(sizes, seed)
    with locate.located(model._pseudo), torch_defaults("cpu", "float64"):
        kwargs = model.bind({k: (v.tolist() if v.dtype.kind == "i" else v)
                             for k, v in data.items()})
        pyro.set_rng_seed(seed)
        trace = pyro.poutine.trace(model.pyro_model).get_trace(**kwargs)
    got = {}
    for name, _ in program.statements:
        if name in trace.nodes:
            got[name] = trace.nodes[name]["value"].detach()
        elif name in kwargs:
            got[name] = kwargs[name]
    return got, float(trace.nodes["z"]["value"]), data


def outcome(body: str, sizes: dict, seed: int = 0) -> dict:
    """Compile `model Shapes(<DATA>) { z ~ Normal(0, 1); <body> }` and run it at `sizes`:
    {'refused': message} at check, {'located': message} for a BdlError at run time
    ('torch' True when it is torch's own error, located), {'raw': message} for any other
    exception, else {'checker': {local: shape at sizes or None}, 'run': {local: shape},
    'kinds': {local: (checker's kind, run dtype)}} for every local `wI`."""
    import ppl

    program = Program([])
    source = program.source().replace("\n}", "\n" + body + "\n}")
    try:
        model = ppl.compile(source)
    except ppl.BdlError as e:
        return {"refused": str(e)}
    names = [n for n in model.checked.symbols if n.startswith("w")]
    program.statements = [(n, None) for n in names]
    try:
        got, _, _ = run_once(model, program, sizes, seed)
    except ppl.BdlError as e:
        return {"located": str(e), "torch": "raised while running" in str(e)}
    except Exception as e:  # noqa: BLE001 - reported
        return {"raw": f"{type(e).__name__}: {e}"}
    symbols = model.checked.symbols
    return {"checker": {n: checker_shape(symbols[n].ty, sizes) for n in names},
            "run": {n: tuple(got[n].shape) for n in names},
            "kinds": {n: (symbols[n].ty.kind, str(got[n].dtype)) for n in names}}


def compare(program: Program, seed) -> dict:
    """{'status': one of STATUSES, ...details}: the first problem found, over SIZE_SETS."""
    import torch

    import ppl

    generic = []
    for sizes in SIZE_SETS[:2]:
        try:
            program.numpy(sizes, data_for(sizes, seed), 0.5)
            generic.append(True)
        except (ValueError, IndexError) as e:
            generic.append(f"{type(e).__name__}: {e}")
    source = program.source()
    try:
        model = ppl.compile(source)
    except ppl.BdlError as e:
        if all(g is True for g in generic):
            return {"status": "false_refusal", "error": str(e)}
        return {"status": "refused", "error": str(e)}
    except Exception as e:  # noqa: BLE001 - reported
        return {"status": "raw_error", "where": "compile", "error": f"{type(e).__name__}: {e}"}
    symbols = model.checked.symbols
    unknown = set()  # locals whose shape the checker leaves unknown (None)
    for sizes in SIZE_SETS:
        try:
            got, z, data = run_once(model, program, sizes, seed)
            run_error = None
        except ppl.BdlError as e:
            got, run_error = None, e
        except Exception as e:  # noqa: BLE001 - reported
            return {"status": "raw_error", "sizes": sizes,
                    "error": f"{type(e).__name__}: {e}"}
        try:
            want = program.numpy(sizes, data_for(sizes, seed),
                                 z if got is not None else 0.5)
            np_error = None
        except (ValueError, IndexError) as e:
            want, np_error = None, f"{type(e).__name__}: {e}"
        if run_error is not None:
            by_torch = "raised while running" in str(run_error)
            # numpy runs it here: torch's error is BDL's own doing; binding's size checks
            # may refuse a coincidence of these sizes (K - 2 = 1 broadcast against 2)
            if np_error is None and (by_torch or all(g is True for g in generic)):
                return {"status": "false_run_refusal", "sizes": sizes, "error": str(run_error)}
            if by_torch:
                # torch's own error, located: the checker let a shape through
                return {"status": "torch_refusal", "sizes": sizes, "error": str(run_error)}
            return {"status": "refused_run", "sizes": sizes, "error": str(run_error)}
        if np_error is not None:
            return {"status": "missed_refusal", "sizes": sizes, "numpy": np_error}
        for name, _ in program.statements:
            if name not in got:
                return {"status": "missing_local", "local": name}
            value = got[name]
            value = value.numpy() if torch.is_tensor(value) else np.asarray(value)
            ty = symbols[name].ty
            said = checker_shape(ty, sizes)
            if said is None:
                unknown.add(name)
            elif said != want[name].shape:
                return {"status": "wrong_shape", "sizes": sizes, "local": name,
                        "checker": str(ty.shape), "checker_at": said,
                        "numpy": want[name].shape, "run": value.shape}
            if value.shape != want[name].shape:
                return {"status": "wrong_run_shape", "sizes": sizes, "local": name,
                        "run": value.shape, "numpy": want[name].shape}
            if value.dtype.kind not in _KINDS.get(ty.kind, ""):
                return {"status": "wrong_kind", "sizes": sizes, "local": name,
                        "checker": ty.kind, "run": str(value.dtype)}
            if not np.allclose(value.astype(float), want[name].astype(float), rtol=1e-6,
                               atol=1e-8, equal_nan=True):
                return {"status": "wrong_value", "sizes": sizes, "local": name}
    return {"status": "agree", "unknown": sorted(unknown)}
