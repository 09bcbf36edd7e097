"""Entry point of a generated module run on its own:
``python model.py [DATA | --data PATH] [--infer SPEC] [--seed S] [-q]``.

DATA is read like ``bdl run``'s (JSON, CSV or NPZ; ``ppl.io.data.load_data``). Bad input
(a missing or malformed data file, data that do not fit the signature, a model that fails
on them) is an ``error:`` on stderr and exit status 1, never a traceback. An error raised
while a statement of the model runs is located in the BDL file, as ``bdl run`` locates it,
by the statement markers of the module (``# bdl:LINE:COL``; ``ppl.locate``). What ``bdl
run`` refuses between checking and fitting is refused in its words when the .bdl file the
module names still generates it, its edited ``*_INFER`` dict aside
(:func:`checked_model`); else a warning says so.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path
from typing import NoReturn

from ..cli import EXIT_USER, _progress, _seed


def main(model, signature, infer: dict | None, transformed=None,
         argv: list[str] | None = None, guide=None) -> None:
    """Bind DATA, run the module's infer settings (the ``*_INFER`` dict the model file
    wrote, then ``--infer`` and ``--seed`` as ``bdl run`` takes them), print what ``bdl
    run`` prints: the posterior summary, the final ELBO and the point estimates.
    ``guide``: the module's guide function (the model file's guide block), svi's
    default guide then."""
    name = getattr(signature, "name", None) or getattr(model, "__name__", "model")
    parser = command_line(name, (infer or {}).get("method", "nuts"),
                          sys.argv[0] if argv is None else "model.py")
    args = parser.parse_args(argv)
    if args.data is not None and args.data_path is not None:
        parser.error("give the data file once: DATA or --data PATH")
    args.data = args.data if args.data is not None else args.data_path

    from .. import locate
    from ..cli import quiet_library_warnings
    from ..io.data import DataError, load_data
    from ..syntax.diagnostics import BdlError

    quiet_library_warnings("warning")
    module = model.__code__.co_filename
    source, text = bdl_source(getattr(signature, "source", None), module)
    locate.register_markers(module, source, text, model.__name__)
    try:
        checked, observed = checked_model(module, source, text, model.__name__)
        data = load_data(args.data) if args.data is not None else {}
        with locate.located(module):
            summary = _fit(model, signature, infer, transformed, data, _progress(args),
                           args.infer, args.seed, checked, text, guide, observed)
    except (DataError, OSError) as e:
        _fail(str(e))
    except BdlError as e:
        print(e.render(), file=sys.stderr)
        sys.exit(EXIT_USER)
    except (RuntimeError, ValueError) as e:
        # torch/pyro errors while evaluating the model: the model or data is at fault
        _fail(f"while running the model: {e}")
    print(summary)


def command_line(name: str, method: str, prog: str) -> argparse.ArgumentParser:
    """The module's options, as docs/language.md's "The generated module" writes them:
    ``[DATA | --data PATH] [--infer SPEC] [--seed S] [-q]``, ``bdl run``'s where they
    share a name."""
    parser = argparse.ArgumentParser(
        prog=prog, description=f"Fit the BDL model {name} (generated Pyro module) with "
                               f"{method} and print the posterior summary.")
    parser.add_argument("data", metavar="DATA", nargs="?",
                        help="data file (.json, .csv or .npz); omit for a model without data")
    parser.add_argument("--data", metavar="PATH", dest="data_path",
                        help="the data file, as bdl run's --data (or DATA)")
    parser.add_argument("--infer", metavar="SPEC",
                        help="inference method and options, as bdl run's --infer "
                             "('svi(steps=200)'; the same method keeps the module's other "
                             "settings, another method drops them)")
    # bdl run's --seed type: a seed out of numpy's range is the same usage error (exit 2)
    parser.add_argument("--seed", metavar="S", type=_seed,
                        help="random seed, 0..2**32-1 (overrides the settings')")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return parser


def bdl_source(source: str | None, module: str) -> tuple[str, str | None]:
    """The BDL file a module was generated from and its text (None when it cannot be
    read): beside the module (``source`` as compiled, relative to where ``bdl compile``
    ran, or its file name), else ``source`` from the current directory."""
    if not source or source.startswith("<"):
        return source or "<string>", None
    here = Path(module).resolve().parent
    for path in (here / source, here / Path(source).name, Path(source)):
        try:
            return source, path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
    return source, None


# what a module run on its own skips without the checked model its .bdl file gives
_SKIPPED = ("the checks bdl run makes before a fit (a method that the model cannot be "
            "fitted by, a statement that no fit can run, data naming a latent) are not made")


def checked_model(module: str, source: str, text: str | None, name: str):
    """The checked model ``name`` (a ``CheckedModel``) of the BDL file ``source`` (its
    ``text``, None: not found) that the generated module at ``module`` was made from, and
    the names its ``~`` statements observe (its lowered ``IRModel.observed``), for the
    refusals ``bdl run`` makes between checking and fitting: the file is checked again and
    used only when it still generates this very module (its ``*_INFER`` dicts aside:
    :func:`_fixed_lines`); else (None, None), and a warning on stderr says why those
    checks are not made."""
    from ..pipeline import compile_source
    from ..syntax.diagnostics import BdlError

    shown = Path(module).name
    if text is None:
        why = (f"{shown} was generated from BDL text, not a file" if source.startswith("<")
               else f"{source}, the BDL file {shown} was generated from, was not found "
                    f"(beside {shown} or in the current directory)")
    else:
        try:
            compiled = compile_source(text, source)
            own = Path(module).read_text(encoding="utf-8")
            editable = {f"{m.upper()}_INFER" for m in compiled.ir}
            same = _fixed_lines(compiled.python, editable) == _fixed_lines(own, editable)
        except (BdlError, OSError, UnicodeDecodeError, SyntaxError):
            compiled, same = None, False
        if same and name in compiled.ir:
            return compiled.checked.models[name], compiled.ir[name].observed
        why = (f"{source} no longer generates {shown} (the model file changed since, "
               f"{shown} was edited, or another version of bdl wrote it)")
    print(f"warning: {why}: {_SKIPPED}", file=sys.stderr)
    return None, None


def _fixed_lines(python: str, editable: set[str]) -> list[str]:
    """The lines of the module ``python`` less its top-level assignments to a name in
    ``editable`` (the ``*_INFER`` dicts, which docs/language.md invites users to edit),
    each assignment whole, however many lines it spans: a module with its infer settings
    edited is still the one its .bdl file generates, and its own method is refused as
    ``--infer`` would be (:func:`_fit`)."""
    drop: set[int] = set()
    for node in ast.parse(python).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id in editable):
            drop.update(range(node.lineno, node.end_lineno + 1))
    return [ln for i, ln in enumerate(python.splitlines(), start=1) if i not in drop]


def _fit(model, signature, infer, transformed, data: dict, progress: bool,
         spec: str | None = None, seed: int | None = None, checked=None,
         text: str | None = None, guide=None, observed=()) -> str:
    """``checked`` (with the BDL ``text``): the module's checked model, whose refusals
    (``ppl.model.refuse_unfittable``, a data key naming a latent, ``refuse_infinite`` of
    the ``observed`` data) are ``bdl run``'s; ``guide``: the module's guide function, if
    its model file has a guide block."""
    from ..infer import custom_guide
    from ..infer.generated import fit_generated, missing_optional
    from ..infer.report import fit_report, sampler_warnings
    from ..infer.run import torch_defaults
    from ..model import merge_infer, refuse_infinite, refuse_unfittable
    from .data import bind

    method, opts = merge_infer(infer, spec, guide_block=guide is not None,
                               model=getattr(signature, "name", None),
                               flags={"seed": "--seed"},
                               **({} if seed is None else {"seed": seed}))
    if checked is not None:
        refuse_unfittable(checked, method, signature.source, text)
    with torch_defaults(opts["device"], opts["dtype"]):
        kwargs = bind(signature, data, source_text=text,
                      drawn=checked.drawn() if checked is not None else None)
        if transformed is not None:
            kwargs.update(transformed(**kwargs))
        if checked is not None:
            refuse_infinite(kwargs, observed, signature, signature.source, text)
        # as ``bdl run``: missing optional data are drawn after the fit, not fitted
        with custom_guide.using(guide):
            result = fit_generated(model, kwargs, method, opts,
                                   missing_optional(signature.args, kwargs),
                                   progress=progress)
    summary = result.summary()
    for w in sampler_warnings(result, summary):  # as bdl run, on stderr
        print(f"warning: {w}", file=sys.stderr)
    return fit_report(result, summary)


def _fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_USER)
