"""Run-time errors pointed at the BDL statement that raised them.

Generated modules run under a pseudo file name (``ppl.model._execute``), and the backend's
source map (``generate_mapped``) says which BDL statement each generated line came from.
A ``ValueError``, ``RuntimeError`` or ``IndexError`` raised while such a line runs -- a
construct refusing an argument value, a torch shape mismatch in a distribution, an index
past the end of a vector (Stan's 1-based habit) -- becomes a located
:class:`BdlError` (``file:line:col: error: ...``, exit status 1 in the CLI), like the
checker's errors. Errors raised outside generated code pass through unchanged.
"""

from __future__ import annotations

import linecache
import re
from contextlib import contextmanager

from .infer.methods import number_text
from .syntax.diagnostics import BdlError, Diagnostic

# pseudo file name of a generated module -> (BDL file name, BDL text, source map, the
# checked model's AST it runs or None); its lines are in linecache under the same name
# (ppl.model._execute)
_MODULES: dict[str, tuple] = {}

# Pyro names the site when a log density fails outside the model's own code (an observed
# value outside its distribution's support, scored by the ELBO or a sampler)
_AT_SITE = re.compile(r"^Error while computing \w+ at site '([^']+)':")
# Pyro's words when no initial point has a finite log density, with what usually causes it
_NO_INIT = ("cannot find valid initial params",
            "no starting point has a finite log density: check that every observed value is "
            "in its distribution's support (counts >= 0, probabilities in [0, 1], positive "
            "scales) and that the priors are proper")


class SiteError(ValueError):
    """What an inference method cannot do with one sample site (sghmc and a discrete
    latent): ``site`` is the site's name, ``notes`` say what to do instead. Raised outside
    the model's code, so :func:`locate` finds the statement by the site's name."""

    def __init__(self, message: str, site: str | None = None, notes: tuple = ()):
        super().__init__(message)
        self.site = site
        self.notes = list(notes)


def register(pseudo: str, filename: str, text: str, source_map: list, model) -> None:
    """``model``: the checked model (its ``ast.Model``) whose function the module runs, for
    the site a Pyro error names and the declaration a support error suggests: a file of
    several models generates every model's function in one module."""
    _MODULES[pseudo] = (filename, text, source_map, model)


# a statement's marker in generated code (backends.pyro.codegen.MARKER): "# bdl:LINE:COL"
_MARKER = re.compile(r"^ *# bdl:(\d+):(\d+)(?:  |$)")


def markers_map(lines: list[str]) -> list:
    """The source map of a generated module read from its statement markers: each
    marker's statement runs from the line after it to the line before the next marker,
    or before the next line at the module's top level (1-based lines)."""
    from .lower import SourceRef
    from .syntax.diagnostics import Span

    starts = [(i, m) for i, line in enumerate(lines, 1) if (m := _MARKER.match(line))]
    out = []
    for k, (i, m) in enumerate(starts):
        end = starts[k + 1][0] - 1 if k + 1 < len(starts) else len(lines)
        for j in range(i + 1, end + 1):
            if lines[j - 1].strip() and not lines[j - 1][0].isspace():
                end = j - 1  # the function ended
                break
        out.append((i + 1, end, SourceRef(Span(int(m.group(1)), int(m.group(2))))))
    return out


def register_markers(path: str, filename: str, text: str | None, name: str) -> None:
    """Locate run-time errors of the generated module at ``path`` (run on its own) by its
    statement markers, at the BDL file ``filename`` whose ``text`` (None: unreadable)
    shows the statement under the error; ``name``: the model the module runs (its model
    in ``text`` when it parses, else just the name, which keeps a site Pyro names inside
    that model's function)."""
    from types import SimpleNamespace

    model = SimpleNamespace(name=name, args=[])
    if text is not None:
        from .syntax.parser import parse

        try:
            model = next((m for m in parse(text).models if m.name == name), model)
        except Exception:  # noqa: BLE001 - the name alone still locates
            pass
    _MODULES[path] = (filename, text, markers_map(linecache.getlines(path)), model)


def _original(exc: BaseException) -> BaseException:
    """The exception as first raised: Pyro's trace re-raises the same type with the trace's
    shapes appended to the message (``raise exc from e``), which says nothing to a user."""
    while (exc.__cause__ is not None and type(exc.__cause__) is type(exc)
           and str(exc).startswith(str(exc.__cause__))):
        exc = exc.__cause__
    return exc


# how much of a tensor printed inside an error message is shown (torch's distribution
# checks print the whole offending tensor: thousands of lines for a data set)
TENSOR_REPR_LIMIT = 200


def bounded(message: str, limit: int = TENSOR_REPR_LIMIT) -> str:
    """``message`` with every ``tensor(...)`` in it on one line and cut to about ``limit``
    characters (``tensor([[nan, nan], [nan, ...``), so that an error stays readable."""
    out, i = [], 0
    while (start := message.find("tensor(", i)) >= 0:
        depth, j = 0, start + len("tensor")
        while j < len(message):  # the matching ")" (or the end of the message)
            depth += {"(": 1, ")": -1}.get(message[j], 0)
            j += 1
            if depth == 0:
                break
        shown = " ".join(message[start:j].split())
        out += [message[i:start], shown if len(shown) <= limit else shown[:limit] + " ..."]
        i = j
    return "".join(out) + message[i:]


def _bound_at(b, at: tuple, shape) -> str:
    """A constraint's bound in words: one number, or, where it differs by element (a
    Binomial's n per row), its value at the bad element ``at`` of an array of ``shape``."""
    import torch

    if isinstance(b, torch.Tensor) and b.numel() == 1:
        b = b.reshape(())  # a bound of one element ([2.2]) is a number
    elif isinstance(b, torch.Tensor) and b.numel() > 1:
        if bool((b == b.flatten()[0]).all()):
            b = b.flatten()[0]
        else:
            try:
                b = b.expand(shape)[at]
            except (RuntimeError, IndexError):
                pass
    return number_text(b)


def support_words(c, at: tuple = (), shape=()) -> tuple[str, bool]:
    """A torch constraint ``c`` (a distribution's support, a parameter's constraint, a
    declared set) in words, ``integers >= 0``, and whether it holds integers: the one
    wording of a runtime set in located errors (an observed value or a parameter outside
    it, a latent outside its declared set, sets that do not meet). A bound that differs by
    element is given at the bad element ``at`` of an array of ``shape``; an unknown
    constraint is its class's name (torch's ``Constraint.__repr__`` cuts the first letter,
    taking it for an underscore: Pyro's ``OneOneMatchingConstraint`` was
    "neOneMatchingConstraint()"). (The checker words its support keys, not torch
    constraints: ``ppl.check.guides``.)"""
    name = type(c).__name__.lstrip("_")
    if name == "IndependentConstraint":
        return support_words(c.base_constraint, at, shape)
    from .runtime.dependent_support import support_ends

    lo, hi = (None if e is None else _bound_at(e, at, shape) for e in support_ends(c))
    words = {
        "Boolean": ("0 or 1", True),
        "IntegerGreaterThan": (f"integers >= {lo}", True),
        "IntegerLessThan": (f"integers <= {hi}", True),
        "IntegerInterval": (f"integers from {lo} to {hi}", True),
        "GreaterThan": (f"numbers > {lo}", False),
        "GreaterThanEq": (f"numbers >= {lo}", False),
        "LessThan": (f"numbers < {hi}", False),
        "Interval": (f"numbers in [{lo}, {hi}]", False),
        "HalfOpenInterval": (f"numbers in [{lo}, {hi})", False),
        "Real": ("numbers (not NaN)", False),
        "Simplex": ("vectors of numbers >= 0 that sum to 1", False),
        "OrderedVector": ("vectors whose entries increase", False),
        "PositiveOrderedVector": ("vectors of numbers > 0 whose entries increase", False),
        "Multinomial": (f"vectors of counts >= 0 that sum to at most {hi}", True),
        "PositiveDefinite": ("symmetric positive-definite matrices", False),
        "LowerCholesky": ("lower-triangular matrices with a positive diagonal", False),
        "CorrCholesky": ("Cholesky factors of correlation matrices", False),
        "CorrMatrix": ("correlation matrices (symmetric positive-definite, unit diagonal)",
                       False),
        "Sphere": ("unit vectors (norm 1)", False),
    }
    if name == "OneOneMatchingConstraint":  # a partner per source, each destination once
        return f"permutations of 0..{c.num_nodes - 1} (each destination once)", True
    if name == "OneTwoMatchingConstraint":
        return (f"vectors of {c.num_sources} destinations in 0..{c.num_destins - 1}, each "
                "destination twice"), True
    if name == "CoalescentTimesConstraint":  # Pyro's _make_phylogeny: lineages > 0
        order = "increasing times" if c.ordered else "times"
        return (f"{order}, each with at least 2 lineages to merge (the leaf times later "
                "than it less the coalescence times later than it)"), False
    return words.get(name, (name, False))


def _locals_in(exc: BaseException, function: str):
    """The locals of each frame of ``exc``'s traceback that runs a function named
    ``function``, outermost first (what the torch check that raised it had in hand);
    :func:`_frame_locals` finds a generated module's frame by its file."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == function:
            yield tb.tb_frame.f_locals
        tb = tb.tb_next


def _support_failure(exc: BaseException):
    """The locals of torch's ``Distribution._validate_sample`` that raised ``exc`` (the
    distribution, its support, the value and which elements are valid), or None."""
    found = None
    for loc in _locals_in(exc, "_validate_sample"):
        if "valid" in loc:
            found = loc
    return found


def _declared(model, name: str):
    """The declared type of data argument ``name`` of ``model`` (its AST, as registered;
    a generated module run on its own registers the one its .bdl names, or a stand-in
    without arguments), or None."""
    return next((arg.type for arg in getattr(model, "args", ()) if arg.name == name), None)


def support_message(exc: BaseException, site: str | None, model=None) -> str | None:
    """An observed value outside its distribution's support (torch's "Expected value argument
    ... to be within the support ...") in words: "'y' element 0 is 1.5; Poisson is over
    integers >= 0", and the declaration that fits when a real holds what must be integers."""
    import torch

    loc = _support_failure(exc)
    if loc is None or "Expected value argument" not in str(exc):
        return None
    dist, value, valid = loc.get("self"), loc.get("value"), loc.get("valid")
    if not isinstance(value, torch.Tensor) or not isinstance(valid, torch.Tensor):
        return None
    # Independent, masked, expanded: the family's name; not inside a family that is a
    # transformed one (Pareto is an Exponential transformed, with Pareto's support)
    while hasattr(dist, "base_dist") and not isinstance(
            dist, torch.distributions.TransformedDistribution):
        dist = dist.base_dist
    if valid.dim() > value.dim():
        return None  # a batch wider than the value (a label summed out): torch's words
    valid = valid.expand(value.shape[: valid.dim()]) if valid.dim() else valid
    bad = (~valid).nonzero()
    what = f"'{site}'" if site else "the value"
    at: tuple = ()
    if bad.numel() and valid.dim():
        at = tuple(bad[0].tolist())
        shown = value[at]
        # the element's index, less the size-1 dimensions that plates add
        index = [i for i, n in zip(at, valid.shape, strict=True) if n > 1]
        what += f" element {number_text(index[0] if len(index) == 1 else index)}" if index else ""
    else:
        shown = value
    words, integers = support_words(loc.get("support"), at, valid.shape)
    msg = f"{what} is {number_text(shown.detach())}; {type(dist).__name__} is over {words}"
    fractional = bool((shown.detach() % 1 != 0).any())
    typ = _declared(model, site) if integers and fractional and site else None
    if typ is not None and typ.base == "real":
        from .syntax.format import type_text

        int_type = type_text(typ).replace("real", "int", 1)
        msg += f"; declare {site}: {int_type}"
    return msg


def _site_line(pseudo: str, site: str) -> int | None:
    """The generated line that declares the Pyro site ``site`` (``pyro.sample("y", ...``),
    in the function of the module's model when it is known (another model of the file may
    have a site of the same name)."""
    model = _MODULES[pseudo][3] if pseudo in _MODULES else None
    inside = model is None
    previous = ""
    for i, line in enumerate(linecache.getlines(pseudo), 1):
        if model is not None and line.startswith("def "):
            inside = line.startswith(f"def {model.name}(")
        if inside and (f'("{site}",' in line or f'("{site}")' in line):
            return i
        # a call too long for one line puts its arguments one a line: the name alone
        if inside and line.strip() == f'"{site}",' and previous.rstrip().endswith("("):
            return i
        previous = line
    return None


def _parameter_failure(exc: BaseException, written: bool = True):
    """The locals of torch's ``Distribution.__init__`` that refused a parameter (the
    distribution, the parameter's name, constraint, value and which elements are valid);
    with ``written`` None where a distribution built inside the one written refused it."""
    import torch

    found, outer = None, None
    for loc in _locals_in(exc, "__init__"):
        if isinstance(loc.get("self"), torch.distributions.Distribution):
            outer = outer or loc["self"]
            if {"param", "constraint", "valid", "value"} <= loc.keys():
                found = loc
    if written and found is not None and type(found["self"]) is not type(outer):
        # refused by a distribution built inside the one written (Beta's Dirichlet,
        # StudentT's Chi2, LogNormal's Normal): its names are not the user's
        return None
    return found


def parameter_message(exc: BaseException) -> str | None:
    """A distribution's parameter outside its constraint (torch's "Expected parameter scale
    (Tensor of shape ()) of distribution Normal(...) to satisfy the constraint ...") in
    words: "Normal's scale is 0; it must be numbers > 0" (element given when one of many)."""
    import torch

    loc = _parameter_failure(exc)
    if loc is None or not str(exc).startswith("Expected parameter "):
        return None
    dist, value, valid = loc.get("self"), loc.get("value"), loc.get("valid")
    if not isinstance(value, torch.Tensor) or not isinstance(valid, torch.Tensor):
        return None
    valid = valid.expand(value.shape[: valid.dim()]) if valid.dim() else valid
    bad = (~valid).nonzero()
    at: tuple = ()
    where = ""
    if bad.numel() and valid.dim():
        at = tuple(bad[0].tolist())
        index = [i for i, n in zip(at, valid.shape, strict=True) if n > 1]
        where = f" element {number_text(index[0] if len(index) == 1 else index)}" if index else ""
        shown = value[at]
    else:
        shown = value
    words, _ = support_words(loc.get("constraint"), at, valid.shape)
    return (f"{type(dist).__name__}'s {loc['param']}{where} is "
            f"{number_text(shown.detach())}; it must be {words}")


def locate(exc: BaseException, pseudo: str | None = None) -> BdlError | None:
    """``exc`` as a located :class:`BdlError` at the innermost generated statement that
    was running when it was raised; else, for Pyro's errors that name a site, at that
    site's statement of the module ``pseudo``; None when neither applies."""
    hit = None
    tb = exc.__traceback__
    while tb is not None:  # outermost -> innermost frame; keep the innermost generated one
        name = tb.tb_frame.f_code.co_filename
        if name in _MODULES:
            hit = (name, tb.tb_lineno)
        tb = tb.tb_next
    at_site = _AT_SITE.match(str(exc))
    named = getattr(exc, "site", None) if isinstance(exc, SiteError) else None
    if hit is None and pseudo in _MODULES:
        if named is not None:
            line = _site_line(pseudo, named)
            hit = (pseudo, line) if line is not None else None
        elif at_site is not None:
            line = _site_line(pseudo, at_site.group(1))
            hit = (pseudo, line) if line is not None else None
        elif _NO_INIT[0] in str(exc):
            filename, text = _MODULES[pseudo][:2]
            note = _NO_INIT[1]
            if "which follows a latent" in str(exc):  # ppl.infer.run._run_chain
                note += (", or no initial value of a latent that a support follows puts the "
                         "data inside it (a prior that puts little mass there)")
            return BdlError([Diagnostic(bounded(str(exc)), notes=[note])], filename, text)
    moved = getattr(_original(exc), "site", None) if named is None else None
    if hit is not None and isinstance(moved, str):
        # about the value of another statement's site (a construct's pixels, first read
        # by its label's statement): that statement's
        line = _site_line(hit[0], moved)
        hit = (hit[0], line) if line is not None else hit
    if hit is None:
        return None
    filename, text, source_map, model = _MODULES[hit[0]]
    lineno = hit[1]
    entries = [(first, ref) for first, last, ref in source_map if first <= lineno <= last]
    if not entries:
        return None
    ref = max(entries, key=lambda e: e[0])[1]  # a plate's body statement, not the plate
    original = _original(exc)
    if at_site is not None and isinstance(exc.__cause__, type(exc)):
        # the library's words, not Pyro's wrapper (a ValueError around a ValueError or a
        # subclass of it, such as a construct's ArgumentError)
        original = _original(exc.__cause__)
    if isinstance(original, (ZeroDivisionError, RuntimeError)):
        empty = _empty_plate(original, ref, model, _frame_locals(exc, hit[0]))
        if empty is not None:  # the data are at fault, not bdl
            err = BdlError([Diagnostic(empty, ref.span, notes=[
                "Pyro's plates cannot be empty: give data with enough elements for the "
                "plate's size to be at least 1, or leave the plate out of the model for "
                "data without any"])], filename, text)
            err.not_a_bug = True
            return err
    argument = getattr(original, "argument", None)
    span = ref.args.get(argument, ref.span) if argument is not None else ref.span
    what = type(original).__name__
    module = "the generated Pyro" if hit[0].startswith("<") else hit[0].rsplit("/", 1)[-1]
    notes = [f"raised while running this statement ({what}, line {lineno} of {module})"
             ] if named is None else list(exc.notes)
    notes += getattr(exc, "__notes__", [])  # what a fit tried first (ppl.infer.run._tried)
    site = at_site.group(1) if at_site is not None else getattr(ref, "name", None)
    support = support_message(original, site, model)
    if support is not None:  # the statement, the element and the support say it all
        # with what a fit tried first (its notes), as in the other messages
        err = BdlError([Diagnostic(support, span, notes=getattr(exc, "__notes__", []))],
                       filename, text)
        err.not_a_bug = True  # the data is at fault: the CLI saves no traceback
        return err
    message = bounded(parameter_message(original) or str(original))
    refused = _parameter_failure(original)
    if refused is not None and argument is None:  # point at the argument torch refused
        span = ref.args.get(refused["param"], span) if hasattr(ref, "args") else span
    if not message.split("Trace Shapes:")[0].strip():
        message = _unsaid(original)
    err = BdlError([Diagnostic(message, span, notes=notes)], filename, text)
    # a check that says what is wrong with the values (a construct refusing its data, a
    # distribution refusing a parameter) is no sign of a bug: the CLI saves no traceback
    err.not_a_bug = _refusal(original)
    return err


def _refusal(exc: BaseException) -> bool:
    """Whether ``exc`` is a deliberate check of the values a model ran with, not a failure
    of bdl's own code: a ``ValueError`` raised by bdl's runtime or a construct (times not
    increasing, states out of range; an :class:`~ppl.runtime.errors.ArgumentError`),
    torch's refusal of a distribution's parameter (``Uniform`` with low > high), or an
    allocation larger than the machine's memory."""
    from pathlib import Path

    if isinstance(exc, RuntimeError) and any(
            w in str(exc) for w in ("can't allocate memory", "out of memory")):
        return True  # a size the machine cannot hold (a: real[9999999999])
    if not isinstance(exc, ValueError):
        return False
    if str(exc).startswith("Expected parameter ") and "to satisfy the constraint" in str(exc):
        return True
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return False
    raised_in = Path(tb.tb_frame.f_code.co_filename)
    package = Path(__file__).resolve().parent
    return raised_in.is_absolute() and package in raised_in.resolve().parents


def _frame_locals(exc: BaseException, pseudo: str) -> dict:
    """The local variables of the innermost frame of the generated module ``pseudo`` that
    ``exc`` (or an exception it was raised from) passed through: the model's sizes and data."""
    found: dict = {}
    while exc is not None:
        tb = exc.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == pseudo:
                found = tb.tb_frame.f_locals
            tb = tb.tb_next
        if found:
            return found
        exc = exc.__cause__
    return found


def _size_source(model, name: str) -> str | None:
    """Where the size ``name`` of ``model`` (its AST) comes from: "data key 'K'" for an int
    argument, "data key 'y'" (or "dimension 2 of data key 'x'") for a shape naming it."""
    from .syntax import ast

    for arg in getattr(model, "args", ()):
        if arg.name == name:
            return f"data key '{name}'"
    for arg in getattr(model, "args", ()):
        for d, dim in enumerate(arg.type.dims):
            if isinstance(dim, ast.Name) and dim.id == name:
                return f"data key '{arg.name}'" if d == 0 else \
                    f"dimension {d + 1} of data key '{arg.name}'"
    return None


def _names(e) -> list[str]:
    """The names an expression reads, in order, each once."""
    from dataclasses import fields, is_dataclass

    from .syntax import ast

    if isinstance(e, ast.Name):
        return [e.id]
    out: list[str] = []
    if is_dataclass(e):
        for f in fields(e):
            v = getattr(e, f.name)
            for x in v if isinstance(v, list) else [v]:
                out += [n for n in _names(x) if n not in out]
    return out


def _plate_at(body: list, span):
    """The plate statement of ``body`` (or nested in it) that starts at ``span``, or None."""
    from .syntax import ast

    for stmt in body:
        if isinstance(stmt, ast.Plate):
            if span is not None and (stmt.span.line, stmt.span.col) == (span.line, span.col):
                return stmt
            inner = _plate_at(stmt.body, span)
            if inner is not None:
                return inner
    return None


def _empty_plate(exc: BaseException, ref=None, model=None, values: dict | None = None
                 ) -> str | None:
    """Pyro's words for a plate of size 0 (``IndepMessenger``'s "size cannot be zero") or
    below (torch.arange's "upper bound and lower bound inconsistent with step sign") in the
    user's: "plate 't' has size T - 1 = -1 (T = 0 from data key 'y')", or None for another
    error."""
    from .syntax import ast
    from .syntax.format import expr

    tb, name, size, in_plate = exc.__traceback__, None, None, False
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "__init__" and "size" in tb.tb_frame.f_locals:
            name = tb.tb_frame.f_locals.get("name", name)
            size = tb.tb_frame.f_locals.get("size", size)
        in_plate = in_plate or "subsample_messenger" in tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    if isinstance(exc, ZeroDivisionError):
        if "size cannot be zero" not in str(exc):
            return None
    elif not (in_plate and "inconsistent with step sign" in str(exc)):
        return None
    if not isinstance(name, str):
        return None
    size = getattr(size, "item", lambda: size)()
    if not isinstance(size, int):
        size = 0 if isinstance(exc, ZeroDivisionError) else None
    ref = _plate_at(getattr(model, "body", []), getattr(ref, "span", None))
    if ref is None:
        return f"plate '{name}' has " + ("a negative size" if size is None else f"size {size}")
    said = [] if isinstance(ref.size, ast.Name) else [expr(ref.size)]
    sources = []
    for n in _names(ref.size):
        source = _size_source(model, n)
        value = (values or {}).get(n)
        value = getattr(value, "item", lambda v=value: v)()
        if source is None or not isinstance(value, int):
            continue
        sources.append(f"{n} = {value} from {source}")
    head = f"plate '{name}' has size " + " = ".join(said + [
        "a negative number" if size is None else str(size)])
    return head + (f" ({', '.join(sources)})" if sources else "")


def _unsaid(exc: BaseException) -> str:
    """Words for an exception raised without any (Pyro's ``VonMises3D.sample`` is a bare
    ``raise NotImplementedError``): the method that raised it, and its class."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return f"{type(exc).__name__} without a message"
    owner = tb.tb_frame.f_locals.get("self")
    where = f"{type(owner).__name__}.{tb.tb_frame.f_code.co_name}" if owner is not None \
        else tb.tb_frame.f_code.co_name
    if isinstance(exc, NotImplementedError):
        return f"{where} is not implemented in Pyro"
    return f"{type(exc).__name__} without a message, raised in {where}"


@contextmanager
def located(pseudo: str | None = None):
    """Re-raise run-time errors from generated code (of the module ``pseudo``) as located
    :class:`BdlError`\\ s."""
    try:
        yield
    except (ValueError, RuntimeError, IndexError, ZeroDivisionError) as e:
        err = locate(e, pseudo)
        if err is None:
            raise
        raise err from e
