"""Random BDL programs with plates, and an independent loop interpreter of them (the oracle).

`generate(seed)` builds a random model over fixed data (`x: real[N]`, `x2: real[N, K]`,
`v: real[K]`, `u: real[M]`, `A: real[K, M]`, `xm: real[N, M]`, `gid: int[N]` with values in
0..K-1): global latents, `=` values, observed sites (Normal, Poisson, Bernoulli), `factor`,
plates (with and without an index, nested up to two deep, some with `batch 2`), latents
drawn in plates, arithmetic, elementwise functions, reductions (with and without `dim`),
`@`, `where`, and indexes (the plate's index, a constant, `:`, `0:2`, `gid[n]`).

`Program.oracle(latents, data, sizes)` computes the log density with numpy/scipy by
running the plates as Stan's loops, one element at a time, following docs/language.md
("Plates"):

- A latent or observed site in a plate is the element's own entry (`y[n]`, `z[n, m]`).
- Only the bare name of plate-sized data (or of a value defined outside every plate, or
  of a value of a plate that has closed) is read per element: `x` in `plate n in N` is
  `x[n]`, `xm` under plates n and m is `xm[n, m]`, `x2` in plate n is the row `x2[n]`.
  An index written into such a value names the whole value, as in Stan's loop: `u[:]` in
  `plate m in M` is the vector `u`, `xm[1]` and `x2[1]` are row 1 for every element,
  `A[0]` is row 0. `x2[n, 1]` (and `x2[n][1]`) is entry 1 of row n.
- A reduction of a bare name is of the whole value (`sum(x2)` is over all of it,
  `sum(xm, dim=0)` over N), then cut to the element where the plate dims are left
  (`sum(x2, dim=1)`, `logsumexp(x2)` are row n's); a reduction of anything else (an
  indexed read, an expression, a value of the plate) is of the element's own value
  (`sum(x2[n])`, `sum(x2 * v)` are row n's). Two readings here have a second Stan
  reading (the bare name as the whole vector), which BDL refuses with a located error
  spelling both, so the oracle's number is not compared: a bare name meeting an outer
  plate's row of its size (`u * xm[n]` under plates n, m), and `logsumexp` (or a
  `dim=-1`) of one number per element that reads a bare name (`logsumexp(u - 0.5)` in
  plate m).
- Values drawn or computed in an open plate are each element's own (`w = x2[n]`; `w[0]`
  is its entry 0, `sum(w)` its sum). `w[n]` of such a value in its own plate n is `w`
  itself in BDL (a plate's own elements), not Stan's entry n: the generator does not
  write it. After an outermost plate closes, such a value is the
  stack of the elements' values, read like data with that leading size; values of an
  inner plate are not read after it closes.
- `factor(e)` adds the sum of `e`'s entries (per element, in a plate); a site's density
  is summed over its entries, and an argument with more entries than the site's value
  (a loc of `[N, K]` for `y6[k]` of `[K]`) is an error, as BDL's "does not fit" and
  Stan's size check are. A `batch` plate is read whole (the harness compares
  `log_density`, which runs the full data).

The generator's choices can be turned off by feature (`generate(seed, off={...})`, see
`FEATURES`), and `Program.features()` names the features a program uses.
"""

from __future__ import annotations

import random

import numpy as np
from scipy import special, stats

# Features the generator can leave out (each off-switch is checked where it would be used).
FEATURES = frozenset({
    "nested",       # a plate inside a plate
    "batch",        # plate ... batch 2
    "unnamed",      # plate N without an index name
    "index",        # an index written into a value: x2[n], A[0], w[1], u[:]
    "slice",        # ':' or '0:2' among an index's items
    "gid",          # v[gid[n]]
    "reduce",       # sum/mean/max/min/logsumexp
    "reduce_dim",   # a reduction with dim=
    "matmul",       # @
    "where",        # where(c1 > c2, a, b)
    "factor",       # factor(e)
    "plate_latent",  # a latent drawn in a plate
})

DATA = {  # name: (shape, kind)
    "x": (("N",), "real"), "x2": (("N", "K"), "real"), "v": (("K",), "real"),
    "u": (("M",), "real"), "A": (("K", "M"), "real"), "xm": (("N", "M"), "real"),
    "gid": (("N",), "gid"),
}
INDEX_NAME = {"N": "n", "K": "k", "M": "m"}


def softplus(x):
    return np.logaddexp(0.0, x)


FUNCTIONS = {"exp": np.exp, "tanh": np.tanh, "softplus": softplus, "log": np.log,
             "sigmoid": special.expit, "abs": np.abs}


# ---------------------------------------------------------------- expressions
#
# An index item is a tuple: ('i', name) the plate's index, ('c', k) a constant,
# ('s',) ':', ('r', a, b) 'a:b', ('g', 'gid', name) gid[name].

def item_source(item) -> str:
    kind = item[0]
    if kind == "i":
        return item[1]
    if kind == "c":
        return str(item[1])
    if kind == "s":
        return ":"
    if kind == "r":
        return f"{item[1]}:{item[2]}"
    if kind == "g":
        return f"{item[1]}[{item[2]}]"
    raise ValueError(kind)


def item_value(item, env):
    kind = item[0]
    if kind == "i":
        return env[item[1]]
    if kind == "c":
        return item[1]
    if kind == "s":
        return slice(None)
    if kind == "r":
        return slice(item[1], item[2])
    if kind == "g":
        return int(env[item[1]][env[item[2]]])
    raise ValueError(kind)


def items_source(items) -> str:
    return ", ".join(item_source(i) for i in items)


class Expr:
    def children(self) -> list:
        return []


class Lit(Expr):
    def __init__(self, value):
        self.value = value

    def source(self):
        return repr(self.value)

    def evaluate(self, env):
        return np.float64(self.value)


class Var(Expr):
    """A bare name; `per_element` names the plate indexes its leading dims are read by
    (data or a closed plate's value read per element), empty for a value of the open
    plates (already the element's own) or one read whole."""

    def __init__(self, name, per_element=()):
        self.name, self.per_element = name, tuple(per_element)

    def source(self):
        return self.name

    def evaluate(self, env):
        value = env[self.name]
        if self.per_element:
            value = value[tuple(env[i] for i in self.per_element)]
        return value


class Index(Expr):
    """name[items] written into a whole value (data, a global, a closed plate's value)."""

    def __init__(self, name, items):
        self.name, self.items = name, list(items)

    def source(self):
        return f"{self.name}[{items_source(self.items)}]"

    def evaluate(self, env):
        return env[self.name][tuple(item_value(i, env) for i in self.items)]


class Subscript(Expr):
    """expr[items] of an element's own value (a value of the open plates, an expression,
    an indexed read)."""

    def __init__(self, base, items):
        assert not (isinstance(base, Var) and base.per_element), "use Index"
        self.base, self.items = base, list(items)

    def source(self):
        base = self.base.source()
        if not isinstance(self.base, (Var, Index)):
            base = f"({base})"
        return f"{base}[{items_source(self.items)}]"

    def evaluate(self, env):
        value = np.asarray(self.base.evaluate(env))
        return value[tuple(item_value(i, env) for i in self.items)]

    def children(self):
        return [self.base]


class BinOp(Expr):
    def __init__(self, op, left, right):
        self.op, self.left, self.right = op, left, right

    def source(self):
        return f"({self.left.source()} {self.op} {self.right.source()})"

    def evaluate(self, env):
        a = np.asarray(self.left.evaluate(env), float)
        b = np.asarray(self.right.evaluate(env), float)
        with np.errstate(all="ignore"):
            if self.op == "+":
                return a + b
            if self.op == "-":
                return a - b
            if self.op == "*":
                return a * b
            if self.op == "/":
                return a / b
            if self.op == "@":
                return a @ b
        raise ValueError(self.op)

    def children(self):
        return [self.left, self.right]


class Call(Expr):
    def __init__(self, function, arg):
        self.function, self.arg = function, arg

    def source(self):
        return f"{self.function}({self.arg.source()})"

    def evaluate(self, env):
        with np.errstate(all="ignore"):
            return FUNCTIONS[self.function](np.asarray(self.arg.evaluate(env), float))

    def children(self):
        return [self.arg]


class Reduce(Expr):
    def __init__(self, function, arg, dim=None):
        self.function, self.arg, self.dim = function, arg, dim

    def source(self):
        if self.dim is None:
            return f"{self.function}({self.arg.source()})"
        return f"{self.function}({self.arg.source()}, dim={self.dim})"

    def evaluate(self, env):
        f = {"sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min,
             "logsumexp": special.logsumexp}[self.function]
        arg = self.arg
        if not (isinstance(arg, Var) and arg.per_element):
            x = np.asarray(arg.evaluate(env), float)
            if self.dim is None and self.function != "logsumexp":
                return f(x)
            return f(x, axis=-1 if self.dim is None else self.dim)
        # a bare name read per element is reduced as the whole value ('sum(g) ... over all
        # of it'), then cut to the element where the plate dims are left (a dim of its own)
        x = np.asarray(env[arg.name], float)
        if self.dim is None and self.function != "logsumexp":
            return f(x)
        axis = (-1 if self.dim is None else self.dim) % x.ndim
        out = f(x, axis=axis)
        if axis >= len(arg.per_element):
            out = out[tuple(env[i] for i in arg.per_element)]
        return out

    def children(self):
        return [self.arg]


class Where(Expr):
    def __init__(self, left, right, then, other):
        self.left, self.right, self.then, self.other = left, right, then, other

    def source(self):
        return (f"where({self.left.source()} > {self.right.source()}, "
                f"{self.then.source()}, {self.other.source()})")

    def evaluate(self, env):
        cond = np.asarray(self.left.evaluate(env)) > np.asarray(self.right.evaluate(env))
        return np.where(cond, np.asarray(self.then.evaluate(env), float),
                        np.asarray(self.other.evaluate(env), float))

    def children(self):
        return [self.left, self.right, self.then, self.other]


def walk_expr(expr):
    yield expr
    for child in expr.children():
        yield from walk_expr(child)


# ---------------------------------------------------------------- statements

class Latent:
    def __init__(self, name, dist, shape, loc=None):
        self.name, self.dist, self.shape, self.loc = name, dist, tuple(shape), loc

    def exprs(self):
        return [] if self.loc is None else [self.loc]


class Let:
    def __init__(self, name, expr):
        self.name, self.expr = name, expr

    def exprs(self):
        return [self.expr]


class Observe:
    def __init__(self, name, dist, args, shape):
        self.name, self.dist, self.args, self.shape = name, dist, list(args), tuple(shape)

    def exprs(self):
        return list(self.args)


class Factor:
    def __init__(self, expr):
        self.expr = expr

    def exprs(self):
        return [self.expr]


class Plate:
    def __init__(self, index, size, body, batch=None):
        self.index, self.size, self.body, self.batch = index, size, body, batch

    def exprs(self):
        return []


def broadcast(a, b):
    """numpy's broadcast of two symbolic shapes, or None where they do not broadcast."""
    a, b = tuple(a), tuple(b)
    n = max(len(a), len(b))
    a = (None,) * (n - len(a)) + a
    b = (None,) * (n - len(b)) + b
    out = []
    for x, y in zip(a, b, strict=True):
        if x is None:
            out.append(y)
        elif y is None or x == y:
            out.append(x)
        else:
            return None
    return tuple(out)


# ---------------------------------------------------------------- generator

class Generator:
    def __init__(self, rng: random.Random, off=frozenset()):
        unknown = set(off) - FEATURES
        assert not unknown, f"unknown features {unknown}"
        self.rng, self.off = rng, frozenset(off)
        self.scope = {}       # name -> (kind, shape); kind 'full', 'elem', 'index', 'gid'
        self.plates = []      # [(index name or None, size)]
        self.observed = {}    # name -> (shape, kind)
        self.latents = {}     # name -> (shape, dist)
        self.home = {}        # a value of the open plates -> the indexes of its plates
        self.counter = 0

    def on(self, feature):
        return feature not in self.off

    def fresh(self, prefix):
        self.counter += 1
        return f"{prefix}{self.counter}"

    def open_sizes(self):
        return [size for _, size in self.plates]

    def atoms(self):
        """(expression, shape) of the names in scope, read bare or indexed."""
        rng = self.rng
        out = []
        sizes = self.open_sizes()
        for name, (kind, shape) in self.scope.items():
            if kind == "index":
                out.append((BinOp("*", Var(name), Lit(0.5)), ()))
                continue
            if kind == "gid":
                continue
            if kind == "elem":
                out.append((Var(name), shape))
                if shape and self.on("index"):
                    for _ in range(2):
                        items, rest = self.items_for(shape, home=self.home.get(name, ()))
                        if items:
                            out.append((Subscript(Var(name), items), rest))
                continue
            # a whole value: its leading dims that are the open plates' are read per element
            per_element, i = [], 0
            for index, size in self.plates:
                if i < len(shape) and shape[i] == size:
                    per_element.append(index)
                    i += 1
            rest = shape[i:]
            if None not in per_element and (not any(d in sizes for d in rest)
                                            or rng.random() < 0.3):
                out.append((Var(name, per_element), rest))
            if not shape or not self.on("index"):
                continue
            for _ in range(3):
                items, rest2 = self.items_for(shape, allow_gid=True)
                if items and (not any(d in sizes for d in rest2) or rng.random() < 0.3):
                    out.append((Index(name, items), rest2))
        return out

    def items_for(self, shape, allow_gid=False, home=()):
        """Index items for a value of `shape` and the shape they leave. The indexes of the
        plates a value was computed in (`home`) are left out: `w[k]` of `w` computed in
        plate k is `w` itself (docs "Plates": a plate's own elements), not its entry k."""
        rng = self.rng
        n = rng.randint(1, len(shape))
        items, kept = [], []
        for d in shape[:n]:
            choices = []
            for index, size in self.plates:
                if index is not None and size == d and index not in home:
                    choices += [("i", index)] * 3
            if allow_gid and d == "K" and "gid" in self.scope and self.on("gid"):
                for index, size in self.plates:
                    if index is not None and size == "N":
                        choices.append(("g", "gid", index))
            choices.append(("c", rng.randint(0, 1)))
            if self.on("slice"):
                choices += [("s",), ("r", 0, 2)]
            item = rng.choice(choices)
            items.append(item)
            if item[0] == "s":
                kept.append(d)
            elif item[0] == "r":
                kept.append("2")
        return items, tuple(kept + list(shape[n:]))

    def expr(self, target, depth):
        """An expression whose shape broadcasts to `target`: (expr, shape)."""
        rng = self.rng
        atoms = self.atoms()
        exact = [a for a in atoms if a[1] == tuple(target)]
        scalars = [a for a in atoms if a[1] == ()]
        if depth <= 0 or rng.random() < 0.25:
            if exact and (rng.random() < 0.8 or not scalars):
                return rng.choice(exact)
            if scalars and rng.random() < 0.8:
                return rng.choice(scalars)
            return Lit(round(rng.uniform(-1, 1), 2)), ()
        c = rng.random()
        if c < 0.3:
            op = rng.choice("+-*")
            a, sa = self.expr(target, depth - 1)
            b, sb = self.expr(target if rng.random() < 0.5 else (), depth - 1)
            if rng.random() < 0.5:
                a, b = b, a
            return BinOp(op, a, b), broadcast(sa, sb)
        if c < 0.38:
            a, sa = self.expr(target, depth - 1)
            if rng.random() < 0.5:
                den = Lit(2.0)
            else:
                den = BinOp("+", Lit(1.5), Call("tanh", self.expr((), depth - 1)[0]))
            return BinOp("/", a, den), sa
        if c < 0.5:
            f = rng.choice(["exp", "tanh", "softplus", "log", "sigmoid"])
            a, sa = self.expr(target, depth - 1)
            if f == "log":
                return Call("log", Call("softplus", a)), sa
            if f == "exp":
                return Call("exp", Call("tanh", a)), sa
            return Call(f, a), sa
        if c < 0.72:
            if not self.on("reduce"):
                return self.expr(target, depth - 1)
            return self.reduction(target, depth, atoms)
        if c < 0.85:
            if not self.on("matmul"):
                return self.expr(target, depth - 1)
            return self.matmul(target, depth, atoms)
        if c < 0.92:
            if not self.on("where"):
                return self.expr(target, depth - 1)
            a, sa = self.expr(target, depth - 1)
            b, sb = self.expr(target, depth - 1)
            left = self.expr((), depth - 1)[0]
            right = self.expr((), depth - 1)[0]
            return Where(left, right, a, b), broadcast(sa, sb)
        if self.on("index"):
            return self.index_into_bigger(target, depth, atoms)
        return self.expr(target, depth - 1)

    def reduction(self, target, depth, atoms):
        rng = self.rng
        f = rng.choice(["sum", "mean", "max", "logsumexp", "sum", "min"])
        shapes = {a[1] for a in atoms if a[1]}
        if target == () and f != "logsumexp" and rng.random() < 0.5 and shapes:
            shape = rng.choice(sorted(shapes))
            a, _ = self.expr(shape, depth - 1)
            return Reduce(f, a), ()
        candidates = [(sh, -1) for sh in shapes if sh[:-1] == tuple(target)]
        candidates += [(sh, 0) for sh in shapes if sh[1:] == tuple(target)]
        if not candidates:
            return self.expr(target, depth - 1)
        shape, dim = rng.choice(sorted(candidates))
        a, sa = self.expr(shape, depth - 1)
        if len(sa) != len(shape):
            return (Reduce(f, a) if f != "logsumexp" else a), ()
        if dim == -1 and rng.random() < 0.4:
            dim = len(shape) - 1
        if f == "logsumexp" and dim == -1 and rng.random() < 0.5:
            dim = None
        if dim is not None and not self.on("reduce_dim"):
            return (Reduce(f, a) if f != "logsumexp" else a), ()
        if dim is not None and dim >= 0 and isinstance(a, Var) and a.per_element:
            dim += len(a.per_element)   # a dim of a bare name counts its declared dims
        return Reduce(f, a, dim), tuple(target)

    def matmul(self, target, depth, atoms):
        rng = self.rng
        shapes = {a[1] for a in atoms if a[1] and len(a[1]) <= 2}
        t = tuple(target)
        options = []
        for sh in shapes:
            if len(sh) == 1 and t == ():
                options.append((sh, sh))
            if len(sh) == 2 and len(t) == 1 and sh[0] == t[0]:
                options.append((sh, (sh[1],)))
            if len(sh) == 2 and len(t) == 1 and sh[1] == t[0]:
                options.append(((sh[0],), sh))
        if options:
            sl, sr = rng.choice(sorted(options))
            a, sa = self.expr(sl, depth - 1)
            b, sb = self.expr(sr, depth - 1)
            if sa == sl and sb == sr:
                return BinOp("@", a, b), t
        return self.expr(target, depth - 1)

    def index_into_bigger(self, target, depth, atoms):
        """One more index into a value with one more leading dim than `target`."""
        rng = self.rng
        for _ in range(3):
            candidates = [a for a in atoms
                          if len(a[1]) == len(target) + 1 and a[1][1:] == tuple(target)]
            if not candidates:
                break
            a, sa = rng.choice(candidates)
            choices = [("c", rng.randint(0, 1))]
            home = self.home.get(a.name, ()) if isinstance(a, Var) else ()
            for index, size in self.plates:
                if index is not None and size == sa[0] and index not in home:
                    choices.append(("i", index))
            item = rng.choice(choices)
            if isinstance(a, Var) and a.per_element:
                # x2 read per element as x2[n]: its entry is x2[n, 1] (x2[1] is row 1)
                return Index(a.name, [("i", i) for i in a.per_element] + [item]), tuple(target)
            return Subscript(a, [item]), tuple(target)
        return self.expr(target, depth - 1)

    def expr_of_shape(self, target, depth):
        for _ in range(20):
            e, shape = self.expr(target, depth)
            if shape is not None and broadcast(shape, target) == tuple(target):
                return e, shape
        return Lit(0.3), ()

    # ------------------------------------------------ statements
    def observe(self, depth):
        rng = self.rng
        plate_shape = tuple(self.open_sizes())
        extra = () if rng.random() < 0.6 else (rng.choice(["K", "M", "N"]),)
        if not plate_shape:
            extra = (rng.choice(["N", "K", "M"]),) if rng.random() < 0.8 else ()
        kind = rng.choice(["normal", "normal", "poisson", "bern"])
        e, _ = self.expr_of_shape(extra, depth)
        name = self.fresh("y")
        if kind == "normal":
            scale = rng.choice([
                Lit(1.0), Var("s") if "s" in self.latents else Lit(0.7),
                BinOp("+", Call("softplus", self.expr_of_shape((), 1)[0]), Lit(0.5))])
            args = [e, scale]
        elif kind == "poisson":
            args = [BinOp("+", Call("softplus", e), Lit(0.1))]
        else:
            args = [e]
        self.observed[name] = (plate_shape + extra, kind)
        return Observe(name, kind, args, plate_shape + extra)

    def block(self, depth, count):
        rng = self.rng
        out = []
        for _ in range(count):
            c = rng.random()
            if c < 0.35:
                target = rng.choice([(), (), ("K",), ("M",), ("N",)])
                e, shape = self.expr_of_shape(target, depth)
                name = self.fresh("w")
                out.append(Let(name, e))
                self.scope[name] = ("elem" if self.plates else "full", shape)
                self.home[name] = {index for index, _ in self.plates}
            elif c < 0.75:
                out.append(self.observe(depth))
            elif c < 0.85:
                e, _ = self.expr_of_shape((), depth)
                if self.on("factor"):
                    out.append(Factor(e))
            elif (self.plates and c < 0.95 and all(i is not None for i, _ in self.plates)
                  and self.on("plate_latent")):
                name = self.fresh("z")
                loc, _ = self.expr_of_shape((), depth - 1)
                shape = tuple(self.open_sizes())
                out.append(Latent(name, "normal", shape, loc))
                self.latents[name] = (shape, "normal")
                self.scope[name] = ("elem", ())
        return out

    def plate(self, depth, level):
        rng = self.rng
        used = set(self.open_sizes())
        size = rng.choice([z for z in ["N", "N", "K", "M"] if z not in used])
        index = INDEX_NAME[size] if rng.random() < 0.85 or not self.on("unnamed") else None
        batch = 2 if rng.random() < 0.08 and self.on("batch") else None
        self.plates.append((index, size))
        saved = dict(self.scope)
        if index:
            self.scope[index] = ("index", ())
        body = self.block(depth, rng.randint(1, 3))
        if level < 2 and rng.random() < 0.45 and self.on("nested"):
            body.append(self.plate(depth, level + 1))
            body += self.block(depth, rng.randint(0, 2))
        self.plates.pop()
        defined = {k: v for k, v in self.scope.items() if k not in saved}
        self.scope = saved
        if level == 1:
            # the values of an outermost plate are whole values after it closes
            for st in body:
                if isinstance(st, (Let, Latent)) and st.name in defined:
                    _, shape = defined[st.name]
                    self.scope[st.name] = ("full", (size,) + tuple(shape))
        return Plate(index, size, body, batch)

    def program(self):
        rng = self.rng
        top = [Latent("a", "normal", ())]
        self.latents["a"] = ((), "normal")
        self.scope["a"] = ("full", ())
        if rng.random() < 0.6:
            top.append(Latent("s", "halfnormal", ()))
            self.latents["s"] = ((), "halfnormal")
            self.scope["s"] = ("full", ())
        if rng.random() < 0.3:
            top.append(Latent("c", "normal", ("K",)))
            self.latents["c"] = (("K",), "normal")
            self.scope["c"] = ("full", ("K",))
        for name, (shape, kind) in DATA.items():
            self.scope[name] = ("gid" if kind == "gid" else "full", shape)
        depth = rng.randint(1, 3)
        top += self.block(depth, rng.randint(0, 2))
        for _ in range(rng.randint(1, 2)):
            top.append(self.plate(depth, 1))
            top += self.block(depth, rng.randint(0, 1))
        return Program(top, dict(self.observed), dict(self.latents))


# ---------------------------------------------------------------- programs

DIST_SOURCE = {"normal": "Normal", "poisson": "Poisson", "bern": "Bernoulli"}


def shape_source(shape):
    return f"[{', '.join(shape)}]" if shape else ""


def walk_statements(block):
    for st in block:
        yield st
        if isinstance(st, Plate):
            yield from walk_statements(st.body)


class Program:
    def __init__(self, top, observed, latents):
        self.top, self.observed, self.latents = top, observed, latents

    def observed_names(self):
        return [st.name for st in walk_statements(self.top) if isinstance(st, Observe)]

    def defines(self, name):
        return any(isinstance(st, Latent) and st.name == name
                   for st in walk_statements(self.top))

    def source(self):
        args = [f"{name}: {'int' if kind == 'gid' else 'real'}{shape_source(shape)}"
                for name, (shape, kind) in DATA.items()]
        for name in self.observed_names():
            shape, kind = self.observed[name]
            args.append(f"{name}: {'real' if kind == 'normal' else 'int'}{shape_source(shape)}")
        lines = ["model F(" + ", ".join(args) + ") {"]

        def emit(block, indent):
            pad = "  " * indent
            for st in block:
                if isinstance(st, Latent):
                    if st.dist == "halfnormal":
                        lines.append(f"{pad}{st.name} ~ HalfNormal(1)")
                    elif st.loc is None and not st.shape:
                        lines.append(f"{pad}{st.name} ~ Normal(0, 1)")
                    else:
                        loc = "0" if st.loc is None else st.loc.source()
                        lines.append(f"{pad}{st.name}: real{shape_source(st.shape)}"
                                     f" ~ Normal({loc}, 1)")
                elif isinstance(st, Let):
                    lines.append(f"{pad}{st.name} = {st.expr.source()}")
                elif isinstance(st, Observe):
                    if st.dist == "bern":
                        a = f"logits={st.args[0].source()}"
                    else:
                        a = ", ".join(x.source() for x in st.args)
                    lines.append(f"{pad}{st.name} ~ {DIST_SOURCE[st.dist]}({a})")
                elif isinstance(st, Factor):
                    lines.append(f"{pad}factor({st.expr.source()})")
                elif isinstance(st, Plate):
                    head = f"plate {st.index} in {st.size}" if st.index else f"plate {st.size}"
                    if st.batch:
                        head += f" batch {st.batch}"
                    lines.append(f"{pad}{head} {{")
                    emit(st.body, indent + 1)
                    lines.append(pad + "}")

        emit(self.top, 1)
        lines.append("}")
        return "\n".join(lines) + "\n"

    def features(self):
        """The features (as in FEATURES, plus 'plate') this program uses."""
        found = set()

        def visit(block, depth):
            for st in block:
                if isinstance(st, Plate):
                    found.add("plate")
                    if depth:
                        found.add("nested")
                    if st.batch:
                        found.add("batch")
                    if st.index is None:
                        found.add("unnamed")
                    visit(st.body, depth + 1)
                    continue
                if isinstance(st, Factor):
                    found.add("factor")
                if isinstance(st, Latent) and depth:
                    found.add("plate_latent")
                for e in st.exprs():
                    for node in walk_expr(e):
                        if isinstance(node, (Index, Subscript)):
                            found.add("index")
                            kinds = {i[0] for i in node.items}
                            if kinds & {"s", "r"}:
                                found.add("slice")
                            if "g" in kinds:
                                found.add("gid")
                        elif isinstance(node, Reduce):
                            found.add("reduce")
                            if node.dim is not None:
                                found.add("reduce_dim")
                        elif isinstance(node, Where):
                            found.add("where")
                        elif isinstance(node, BinOp) and node.op == "@":
                            found.add("matmul")

        visit(self.top, 0)
        return found

    # ------------------------------------------------ data and latents
    def make_data(self, sizes, rng: np.random.Generator):
        data = {}
        for name, (shape, kind) in DATA.items():
            dims = tuple(sizes[x] for x in shape)
            if kind == "gid":
                data[name] = rng.integers(0, sizes["K"], size=dims)
            else:
                data[name] = np.round(rng.normal(size=dims), 3)
        for name in self.observed_names():
            shape, kind = self.observed[name]
            dims = tuple(sizes[x] for x in shape)
            if kind == "normal":
                data[name] = np.round(rng.normal(size=dims), 3)
            elif kind == "poisson":
                data[name] = rng.poisson(1.5, size=dims)
            else:
                data[name] = rng.integers(0, 2, size=dims)
        return data

    def make_latents(self, sizes, rng: np.random.Generator):
        out = {}
        for name, (shape, dist) in self.latents.items():
            if not self.defines(name):
                continue
            value = np.round(rng.normal(size=tuple(sizes[x] for x in shape)), 3)
            if dist == "halfnormal":
                value = np.abs(value) + 0.2
            out[name] = value
        return out

    # ------------------------------------------------ the oracle
    def oracle(self, latents, data, sizes) -> float:
        """The log density by Stan's loops (see the module docstring)."""
        env = dict(data)
        env.update(sizes)
        total = [0.0]

        def site(dist, args, y):
            y = np.asarray(y, float)
            if dist == "normal":
                loc, scale = args
                lp = stats.norm.logpdf(y, loc, scale)
            elif dist == "poisson":
                lp = stats.poisson.logpmf(y, args[0])
            else:
                lp = y * args[0] - softplus(args[0])
            shape = np.broadcast_shapes(y.shape, *(np.shape(a) for a in args))
            if shape != y.shape:  # BDL: an argument larger than the site "does not fit"
                raise ValueError(f"arguments of shape {shape} for a site of shape {y.shape}")
            return np.sum(np.broadcast_to(lp, shape))

        def run(block, env, element):
            for st in block:
                if isinstance(st, Latent):
                    value = latents[st.name]
                    if element:
                        value = value[tuple(element)]
                    if st.dist == "halfnormal":
                        total[0] += stats.halfnorm.logpdf(value)
                    else:
                        loc = 0.0 if st.loc is None else st.loc.evaluate(env)
                        total[0] += np.sum(stats.norm.logpdf(value, loc, 1.0))
                    env[st.name] = value
                elif isinstance(st, Let):
                    env[st.name] = np.asarray(st.expr.evaluate(env), float)
                elif isinstance(st, Observe):
                    y = data[st.name]
                    if element:
                        y = y[tuple(element)]
                    args = [np.asarray(a.evaluate(env), float) for a in st.args]
                    total[0] += site(st.dist, args, y)
                elif isinstance(st, Factor):
                    total[0] += float(np.sum(st.expr.evaluate(env)))
                elif isinstance(st, Plate):
                    collected = {}
                    for i in range(sizes[st.size]):
                        inner = dict(env)
                        if st.index:
                            inner[st.index] = i
                        run(st.body, inner, element + [i])
                        if not element:
                            for b in st.body:
                                if isinstance(b, (Let, Latent)):
                                    collected.setdefault(b.name, []).append(
                                        np.asarray(inner[b.name], float))
                    for name, values in collected.items():
                        env[name] = np.stack(values)

        run(self.top, env, [])
        return float(total[0])


def generate(seed, off=frozenset()) -> Program:
    return Generator(random.Random(seed), off).program()


def sizes_for(seed):
    """N, K, M for a seed: mostly three different sizes, sometimes equal ones."""
    rng = random.Random(seed * 7 + 1)
    if rng.random() < 0.85:
        values = rng.sample([3, 4, 5], 3)
    else:
        values = [rng.choice([3, 4]) for _ in range(3)]
    return dict(zip(["N", "K", "M"], values, strict=True))


def inputs_for(program: Program, seed):
    """(sizes, data, latents) of a program for a seed."""
    sizes = sizes_for(seed)
    rng = np.random.default_rng(seed)
    data = program.make_data(sizes, rng)
    return sizes, data, program.make_latents(sizes, rng)


# ---------------------------------------------------------------- the harness

def compare(program: Program, seed):
    """Compile the program, run `log_density` at the seed's latents and data, and compare
    with the oracle: {'status': 'agree' | 'DISAGREE' | 'refused_compile' | 'refused_run' |
    'crash' | 'oracle_error', ...} ('crash' is any exception other than a BdlError,
    'oracle_error' a program the oracle cannot run, shapes that do not meet in Stan's
    loop, that BDL ran instead of refusing)."""
    import torch

    import ppl

    sizes, data, latents = inputs_for(program, seed)
    try:
        want = program.oracle(latents, data, sizes)
    except ValueError as e:  # shapes that do not meet in Stan's loop: BDL should refuse
        want = f"{type(e).__name__}: {e}"
    source = program.source()
    try:
        model = ppl.compile(source)
    except ppl.BdlError as e:
        return {"status": "refused_compile", "error": str(e)}
    except Exception as e:  # noqa: BLE001 - reported as a crash
        return {"status": "crash", "error": f"{type(e).__name__}: {e}"}
    try:
        got = model.log_density(
            {k: torch.tensor(v, dtype=torch.float64) for k, v in latents.items()},
            {k: (v.tolist() if v.dtype.kind == "i" else v) for k, v in data.items()})
    except ppl.BdlError as e:
        return {"status": "refused_run", "error": str(e)}
    except Exception as e:  # noqa: BLE001
        return {"status": "crash", "error": f"{type(e).__name__}: {e}"}
    got = float(got)
    if isinstance(want, str):
        return {"status": "oracle_error", "got": got, "error": want}
    agree = ((np.isnan(got) and np.isnan(want)) or got == want
             or abs(got - want) <= 1e-6 * max(1.0, abs(want)))
    return {"status": "agree" if agree else "DISAGREE", "got": got, "want": want}
