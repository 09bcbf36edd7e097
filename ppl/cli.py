"""The ``bdl`` command: check, compile, run, predict, fmt, info, tex.

Exit status: 0 success, 1 the model, its data or its options are wrong (located errors
on stderr, never a traceback), 2 the command line is wrong, 3 an internal error (a short
"please report" message; the traceback is saved to a file, not printed).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

EXIT_USER, EXIT_USAGE, EXIT_INTERNAL = 1, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        print(f"bdl: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _seed(text: str) -> int:
    """``--seed``: an integer in numpy's range, 0..SEED_MAX (else exit 2, with the range)."""
    from .infer.methods import SEED_MAX, seed_problem

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seed {text!r}: expected an integer "
                                         f"from 0 to {SEED_MAX}") from None
    why = seed_problem(value)
    if why:
        raise argparse.ArgumentTypeError(f"seed {value} is out of range: {why}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}")
    return value


def _read(path: str) -> str:
    p = Path(path)
    if not p.exists():
        raise _UserError(f"{path}: no such file")
    if p.is_dir():
        raise _UserError(f"{path}: is a directory (expected a .bdl file)")
    try:
        return p.read_text()
    except UnicodeDecodeError:
        raise _UserError(f"{path}: not a text file (UTF-8 expected)") from None


class _UserError(Exception):
    pass


def _print_warnings(warnings, filename, text, errors=()) -> None:
    """Print ``warnings``, less those that ``errors`` (the errors about to be raised)
    repeat: a statement no fit can run is a check warning and, once a fit starts, the
    same words as its error; one mistake is printed once."""
    for w in warnings:
        if any(w.span == e.span and w.message.startswith(e.message) for e in errors):
            continue
        print(w.render(filename, text), file=sys.stderr)


def cmd_check(args) -> int:
    from .pipeline import front

    status = 0
    for path in args.files:
        text = _read(path)
        from .syntax.diagnostics import BdlError

        try:
            checked = front(text, path)
        except BdlError as e:
            print(e.render(), file=sys.stderr)
            status = EXIT_USER
            continue
        _print_warnings(checked.warnings, path, text)
        if not args.quiet:
            print(f"{path}: ok ({', '.join(checked.models)})")
    return status


def cmd_compile(args) -> int:
    from .pipeline import compile_source

    text = _read(args.file)
    out = Path(args.output) if args.output and args.output != "-" else None
    if out is not None:
        _check_output_file(out, Path(args.file), args.force)
    compiled = compile_source(text, args.file)
    _print_warnings(compiled.checked.warnings, args.file, text)
    if args.model is not None and args.model not in compiled.ir:
        raise _UserError(f"{args.file}: no model named '{args.model}'")
    if out is not None:
        try:
            out.write_text(compiled.python)
        except OSError as e:
            raise _UserError(f"-o {out}: cannot write it ({e.strerror or e})") from None
        print(f"wrote {out}", file=sys.stderr)
    else:
        sys.stdout.write(compiled.python)
    return 0


def _check_output_file(out: Path, source: Path, force: bool) -> None:
    """``compile -o OUT`` can be written, before anything is compiled: not the model file
    itself (even with --force), not a folder, not an existing file without --force, and
    in a folder that exists and is writable."""
    import os

    if out.resolve() == source.resolve():
        raise _UserError(f"-o {out} is the model file {source} itself: the generated Python "
                         "would replace it (choose another output file)")
    if out.is_dir():
        raise _UserError(f"-o {out} is a directory (expected a file name, such as "
                         f"{out / source.with_suffix('.py').name})")
    if out.exists() and not force:
        raise _UserError(f"{out} exists; use --force to overwrite it")
    parent = out.absolute().parent
    if not parent.is_dir():
        raise _UserError(f"-o {out}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise _UserError(f"-o {out}: cannot write there (permission denied)")


def _default_data(path: str) -> str | None:
    p = Path(path)
    cand = p.with_name(p.name[: -len(p.suffix)] + ".data.json") if p.suffix else None
    return str(cand) if cand is not None and cand.exists() else None


def _load_data(path: str | None) -> tuple[dict, str | None]:
    """The data in the file at ``path`` ({} for None) and the sha256 of the bytes read
    (run.json's and predict.json's ``data_hash``): the file is read once."""
    from .io.data import DataError, read_data

    if path is None:
        return {}, None
    try:
        return read_data(path)
    except DataError as e:
        raise _UserError(str(e)) from None


# how bdl run's flags that are also infer options are spelt (Model.resolve_infer)
_FLAGS = {"seed": "--seed", "device": "--device", "dtype": "--dtype",
          "jit": "--backend pyro-compiled"}


def cmd_run(args) -> int:

    from .infer.report import fit_report, sampler_warnings
    from .io.run_folder import (
        RunFolderError,
        check_creatable,
        check_reads,
        check_writable,
        fit_results,
        record_files,
        run_files,
        write_run,
    )
    from .model import Model
    from .pipeline import compile_source
    from .syntax.diagnostics import BdlError

    text = _read(args.file)
    compiled = compile_source(text, args.file)
    model = Model(compiled, args.model)
    # the fit refuses what checked.fit_errors holds (Model.resolve_infer)
    _print_warnings(compiled.checked.warnings, args.file, text, model.checked.fit_errors)
    data_path = args.data or _default_data(args.file)
    # hashed as read (the bytes parsed), before anything in --out is removed or written
    data, data_hash = _load_data(data_path)
    overrides = {}
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.device is not None:
        overrides["device"] = args.device
    if args.dtype is not None:
        overrides["dtype"] = args.dtype
    if args.backend == "pyro-compiled":
        overrides["jit"] = True
    method, opts = model.resolve_infer(args.infer, flags=_FLAGS, **overrides)
    out = Path(args.out) if args.out else Path("runs") / (
        f"{model.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        check_writable(out, args.force)
        check_reads(out, data_path)
        check_creatable(out)  # before the fit, not after it
    except RunFolderError as e:
        raise _UserError(str(e)) from None
    # written as the language writes options, so the line pastes back into --infer
    print(f"{model.name}: {method}({', '.join(f'{k}={_spell(v)}' for k, v in opts.items())})",
          file=sys.stderr)
    try:
        fit = model.fit(data, method, progress=_progress(args), **opts)
    except BdlError as e:
        if data_path is None and any(d.message.startswith("missing data")
                                     for d in e.diagnostics):
            stem = Path(args.file).with_suffix("").name
            e.diagnostics[0].notes.append(f"no data file was given (--data) and there is no "
                                          f"{stem}.data.json beside the model")
        _note_nan(e, data, model)
        raise
    summary = fit.summary()
    print(fit_report(fit, summary))
    results = fit_results(fit)
    for line in results_lines(results, opts):
        print(line)
    warns = sampler_warnings(fit, summary)
    if warns:
        print("\n" + "\n".join(f"warning: {w}" for w in warns), file=sys.stderr)
    write_run(out, fit, model=model.name, file=args.file, source=text, data_path=data_path,
              data_hash=data_hash, force=True, summary=summary)  # checked before the fit
    from .plots import write_plots

    observed = set(model.ir.observed)
    covariates = {k: v for k, v in fit.kwargs.items() if k not in observed}
    plots = write_plots(fit, out, covariates, [s for s in fit.deterministics if s in observed])
    written = run_files(fit) + (plots or [])
    record_files(out, written)  # run.json's "files": what a later --force removes
    if plots is None:
        print("note: plots skipped (matplotlib is not installed: pip install 'ppl[plots]')",
              file=sys.stderr)
    if args.arviz:
        from .io.arviz import ArvizMissing

        try:
            fit.to_inference_data().to_netcdf(out / "posterior.nc")
        except ArvizMissing as e:
            raise _UserError(str(e)) from None
        written.append("posterior.nc")
        record_files(out, ["posterior.nc"])
    print(f"\nwrote {out}/ ({', '.join(written)})", file=sys.stderr)
    return 0


def results_lines(results: dict, opts: dict) -> list[str]:
    """One line per result a fit measured besides its draws (``fit_results``): the
    meta-test scores of infer meta, each np_train network's final loss and fresh-task
    log-likelihoods."""
    lines = []
    test = results.get("meta", {}).get("test")
    if test:
        n = opts.get("test_episodes")
        ci = f" \u00b1 {test['err_ci']:.2g}" if "err_ci" in test else ""
        ece = f", ece {test['ece']:.4g}" if isinstance(test.get("ece"), (int, float)) else ""
        lines.append(f"meta-test{f' ({n} episodes)' if n else ''}: query err "
                     f"{test['err']:.4g}{ci}, nll {test['nll']:.4g}{ece}")
    losses = results.get("train_loss", {})
    for name, ev in results.get("np_eval", {}).items():
        loss = losses.get(name)
        head = (f"{name}: final train loss {loss['final']:.4g} after {loss['steps']} steps; "
                if loss else f"{name}: ")
        lines.append(f"{head}fresh tasks: context ll {ev['ctx_ll']:.3f}, target ll "
                     f"{ev['tgt_ll']:.3f} per point")
    return ["", *lines] if lines else []


def _construct_data(model) -> set[str]:
    """The data names a construct reads as possibly missing (its entry's
    ``missing_as_nan``): given to such an argument (``fractional_sde(..., data=y)``) or
    observed by such an attribute (``pixels ~ m.visible``). What NaN means there is the
    construct's to say; its other arguments (``times=t``) are plain data."""
    from .builtins import lookup
    from .syntax import ast

    built, out = {}, set()  # name of a construct's value -> its entry
    for node in ast.walk(model.checked.model.body):
        call = getattr(node, "value", None) if isinstance(node, ast.Assign) else node
        entry = lookup(call.func.id) if isinstance(call, ast.Call) \
            and isinstance(call.func, ast.Name) else None
        if entry is not None and entry.missing_as_nan:
            for kw in call.kwargs:
                if kw.name in entry.missing_as_nan:
                    out.update(ast.names_read(kw.value))
            if isinstance(node, ast.Assign):
                built[node.name] = entry
        if isinstance(node, ast.Sample) and isinstance(node.dist, ast.Attr) \
                and isinstance(node.dist.value, ast.Name) and node.dist.value.id in built \
                and node.dist.attr in built[node.dist.value.id].missing_as_nan:
            out.add(node.name)
    return out & {a.name for a in model.checked.model.args}


def _note_nan(e, data: dict, model) -> None:
    """A note on a run-time error (raised while the model ran) naming the data arguments
    that hold inf, and those that hold NaN: BDL data have no missing-value marker, except
    where a construct reads them (monotone_dbm's visible units, fractional_sde's
    observations; :func:`_construct_data`), whose NaN are not named."""
    import numpy as np

    if e.__cause__ is None or not e.diagnostics:
        return
    held, infinite = [], []
    skip = _construct_data(model)
    for k, v in data.items():
        try:
            a = np.asarray(v, dtype=float)
        except (TypeError, ValueError, OverflowError):
            continue
        m = int(np.isinf(a).sum())
        if m:
            infinite.append(f"'{k}' ({m} inf value{'s' if m != 1 else ''})")
        n = int(np.isnan(a).sum())
        if n and k not in skip:
            held.append(f"'{k}' ({n} NaN value{'s' if n != 1 else ''})")
    if infinite:
        e.diagnostics[0].notes.append(
            f"the data hold inf: {', '.join(infinite)}; the model may not be able to use "
            "an infinite value there")
    if held:
        e.diagnostics[0].notes.append(
            f"the data hold NaN: {', '.join(held)}; NaN is not a missing-value marker "
            "here (only monotone_dbm's visible units and fractional_sde's observations read "
            "it so): remove or impute those values")


def _spell(value) -> str:
    """An option value as a model file writes it: true/false, a word bare and other text
    quoted, [a, b], and a structured value such as np_train's task source as its call,
    ``gp_tasks(kernel=rbf, lengthscale=[0.1, 0.6])`` (compile-site data left out)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value.isidentifier() else json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(map(_spell, value)) + "]"
    if isinstance(value, dict) and "call" in value:
        parts = [_spell(a) for a in value.get("args", [])]
        parts += [f"{k}={_spell(v)}" for k, v in value.get("kwargs", {}).items()]
        return f"{value['call']}({', '.join(parts)})"
    return str(value)


def _progress(args) -> bool:
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def cmd_predict(args) -> int:
    from .io.run_folder import (
        PREDICT_WRITES,
        RunFolderError,
        check_creatable,
        check_folder,
        predict_record,
        read_record,
        write_predict,
    )
    from .model import Model
    from .pipeline import compile_source
    from .syntax.diagnostics import BdlError

    text = _read(args.file)
    post_dir = Path(args.posterior)
    try:
        run = read_record(post_dir)
    except RunFolderError as e:
        raise _UserError(str(e)) from None
    compiled = compile_source(text, args.file)
    name = args.model or run.get("model")
    if args.model is not None and name not in compiled.ir:
        raise _UserError(f"{args.file}: no model named '{name}' (it has: "
                         f"{', '.join(compiled.ir)})")
    if name is not None and name not in compiled.ir:
        raise _UserError(f"{post_dir} is a run of model '{name}' (from {run.get('file')}); "
                         f"{args.file} has no model of that name (it has: "
                         f"{', '.join(compiled.ir)}; choose one with --model)")
    model = Model(compiled, name)
    data, data_hash = _load_data(args.data)  # hashed as read (predict.json)
    out = Path(args.out) if args.out else post_dir
    try:
        check_folder(out)
        check_creatable(out)  # before the draws, not after them
    except RunFolderError as e:
        raise _UserError(str(e)) from None
    for written in PREDICT_WRITES:
        if (out / written).resolve() == Path(args.data).resolve():
            raise _UserError(f"--data {args.data} would be overwritten by the {written} "
                             "that bdl predict writes there; move the data file or choose "
                             "another --out")
        if (out / written).exists() and not args.force:
            raise _UserError(f"{out / written} exists; use --force to overwrite it")
    try:
        pred = model.predict_run(post_dir, data, seed=args.seed, draws=args.draws)
    except RunFolderError as e:
        raise _UserError(str(e)) from None
    except BdlError as e:
        _note_nan(e, data, model)
        raise
    if not pred:
        given = [n for n in model.ir.observed if data.get(n) is not None]
        print(f"bdl: note: nothing to predict: {args.data} gives every site that the run "
              "did not sample" + (f" ({', '.join(given)})" if given else "")
              + "; leave out what to predict (optional data such as 'y_new: real[M]?', or "
                "observed data at new inputs). Nothing was written", file=sys.stderr)
        return 0
    record = predict_record(model=model.name, file=args.file, source=text,
                            posterior=post_dir, run=run, data_path=args.data,
                            data_hash=data_hash, seed=args.seed, draws=args.draws, pred=pred)
    # in a run folder, recorded in its run.json: removed with the run by bdl run --force
    try:
        written = write_predict(out, pred, record)
    except OSError as e:
        raise _UserError(f"--out {out}: cannot write it ({e.strerror or e})") from None
    from .infer.summary import summarise

    shown = {k: v.unsqueeze(0) for k, v in pred.items() if v.dim() >= 1}
    if shown:
        print(summarise(shown, list(shown)))
    print(f"\nwrote {out}/ ({', '.join(written)})", file=sys.stderr)
    return 0


def _replace_file(path: Path, data: bytes) -> None:
    """Write ``data`` over ``path`` all at once: into a new file beside it (same mode),
    then renamed over it, so an interrupted or failed write leaves the old file whole."""
    import os
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cmd_fmt(args) -> int:
    """Every file, even after one that fails: a file that does not parse, cannot be read
    or written is reported and makes the status 1. A file's line ends are kept (CRLF
    when its first line ends so), in what is printed, checked and written."""
    from .syntax.diagnostics import BdlError
    from .syntax.format import fmt

    status = 0
    for path in args.files:
        try:
            try:
                text = _read(path)
                raw = Path(path).read_bytes()
            except OSError as e:  # unreadable
                raise _UserError(f"{path}: cannot read it: {e.strerror or e}") from None
            new = fmt(text, path)
            first = raw.find(b"\n")
            if first > 0 and raw[first - 1:first] == b"\r":
                new = new.replace("\n", "\r\n")
            if args.check:
                if new.encode() != raw:
                    print(f"{path}: would reformat", file=sys.stderr)
                    status = EXIT_USER
            elif args.in_place:
                if new.encode() != raw:
                    try:
                        _replace_file(Path(path), new.encode())
                    except OSError as e:
                        raise _UserError(f"{path}: cannot write it: {e.strerror or e}") from None
                    print(f"reformatted {path}", file=sys.stderr)
            else:
                sys.stdout.write(new)
        except BdlError as e:
            print(e.render(), file=sys.stderr)
            status = EXIT_USER
        except _UserError as e:
            print(f"bdl: error: {e}", file=sys.stderr)
            status = EXIT_USER
    return status


def cmd_info(args) -> int:
    from .info import model_info
    from .pipeline import front

    text = _read(args.file)
    checked = front(text, args.file)
    names = [args.model] if args.model else list(checked.models)
    for n in names:
        if n not in checked.models:
            raise _UserError(f"{args.file}: no model named '{n}'")
    info = {n: model_info(checked.models[n]) for n in names}
    print(json.dumps(info if len(info) > 1 else info[names[0]], indent=2))
    return 0


def cmd_tex(args) -> int:
    from .pipeline import front
    from .tex import model_tex

    text = _read(args.file)
    checked = front(text, args.file)
    if args.model is not None and args.model not in checked.models:
        raise _UserError(f"{args.file}: no model named '{args.model}'")
    for name, cm in checked.models.items():
        if args.model is None or args.model == name:
            sys.stdout.write(model_tex(cm.model))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = _Parser(prog="bdl", description="BDL: Bayesian deep learning models compiled to Pyro.")
    p.add_argument("--version", action="version", version=f"bdl {__version__}")
    sub = p.add_subparsers(dest="verb", required=True, parser_class=_Parser)

    c = sub.add_parser("check", help="parse and check models (fast; no torch)")
    c.add_argument("files", nargs="+", help=".bdl files to parse and check")
    c.add_argument("-q", "--quiet", action="store_true", help="no 'ok' line for files that pass")
    c.set_defaults(func=cmd_check)

    c = sub.add_parser("compile", help="print the generated Pyro source")
    c.add_argument("file", help="the .bdl file")
    c.add_argument("-o", "--output", help="write the Pyro module here (default or '-': stdout)")
    c.add_argument("--model", help="which model of the file (default: the last)")
    c.add_argument("--force", action="store_true",
                   help="overwrite an existing output file")
    c.set_defaults(func=cmd_compile)

    # options and metavars as docs/language.md's "Command line" writes them
    # (tests/test_generated_standalone_help.py)
    c = sub.add_parser("run", help="fit a model and print its posterior summary")
    c.add_argument("file", metavar="FILE", help="the .bdl file")
    c.add_argument("--data", metavar="PATH",
                   help="JSON, CSV or .npz data (default: FILE.data.json beside it)")
    c.add_argument("--model", metavar="NAME", help="which model of the file (default: the last)")
    c.add_argument("--infer", metavar="SPEC",
                   help='method and options, e.g. "nuts(samples=500)" or "svi(steps=2000)" '
                        "(the same method as the infer line's keeps its other options)")
    c.add_argument("--seed", metavar="S", type=_seed,
                   help="random seed, 0..2**32-1 (default: the infer line's, else 0)")
    c.add_argument("--device", choices=["cpu", "cuda"],
                   help="where tensors live (default: the infer line's, else cpu)")
    c.add_argument("--dtype", choices=["float32", "float64"],
                   help="floating point precision (default: the infer line's, else float64 "
                        "for nuts and hmc, float32 for the other methods)")
    c.add_argument("--backend", choices=["pyro", "pyro-compiled"], default="pyro",
                   help="pyro-compiled: JIT-compiled potential (NUTS/HMC) or ELBO (SVI/MAP), "
                        "as jit=true")
    c.add_argument("--out", metavar="DIR", help="run folder (default: runs/MODEL-TIME)")
    c.add_argument("--force", action="store_true",
                   help="write into a non-empty run folder, removing the files an earlier "
                        "run recorded there")
    c.add_argument("--arviz", action="store_true", help="also write posterior.nc (ArviZ)")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=cmd_run)

    c = sub.add_parser("predict", help="posterior predictive from a saved run")
    c.add_argument("file", metavar="FILE", help="the .bdl file the run was made from")
    c.add_argument("--posterior", metavar="DIR", required=True,
                   help="a run folder written by 'bdl run'")
    c.add_argument("--data", metavar="PATH", required=True,
                   help="the new data (JSON, CSV or .npz)")
    c.add_argument("--model", metavar="NAME", help="which model of the file (default: the run's)")
    c.add_argument("--out", metavar="DIR", help="folder for predictive.npz and predict.json "
                                                "(default: the run folder)")
    c.add_argument("--seed", metavar="S", type=_seed, default=0,
                   help="random seed of the draws, 0..2**32-1 (default 0)")
    c.add_argument("--draws", metavar="K", type=_positive,
                   help="predictive draws: that many of the saved posterior draws, evenly "
                        "spaced (default: all); for a map run, or one with nothing latent "
                        "saved, draws at the saved point (default 1000)")
    c.add_argument("--force", action="store_true",
                   help="overwrite predictive.npz and predict.json")
    c.set_defaults(func=cmd_predict)

    c = sub.add_parser("fmt", help="print (or apply) the canonical layout")
    c.add_argument("files", nargs="+")
    g = c.add_mutually_exclusive_group()
    g.add_argument("--check", action="store_true", help="exit 1 if a file would change")
    g.add_argument("--in-place", action="store_true")
    c.set_defaults(func=cmd_fmt)

    c = sub.add_parser("info", help="JSON description of data, latents, params")
    c.add_argument("file")
    c.add_argument("--model")
    c.set_defaults(func=cmd_info)

    c = sub.add_parser("tex", help="the model as LaTeX")
    c.add_argument("file")
    c.add_argument("--model")
    c.set_defaults(func=cmd_tex)

    c = sub.add_parser("help", help="help on a verb")
    c.add_argument("topic", nargs="?")
    c.set_defaults(func=lambda a: _help(p, a.topic))
    return p


def _help(parser, topic) -> int:
    if topic is None:
        parser.print_help()
        return 0
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if topic not in sub.choices:
        raise _UserError(f"no verb '{topic}' (verbs: {', '.join(sub.choices)})")
    sub.choices[topic].print_help()
    return 0


def quiet_library_warnings(prefix: str = "bdl: warning") -> None:
    """Warnings about the user's model or data read as ``PREFIX: ...`` on stderr (no
    Python file and line); library deprecation notices (torch.jit, Pyro) are not the
    user's concern and are not shown. ``bdl`` and a generated module run on its own
    (``ppl.runtime.main``, prefix ``warning``) both show warnings so."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{prefix}: {message}", file=sys.stderr)

    warnings.showwarning = show
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


def main(argv: list[str] | None = None) -> int:
    from .locate import SiteError, bounded
    from .syntax.diagnostics import BdlError

    quiet_library_warnings()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BdlError as e:
        for d in e.diagnostics:  # a tensor in a message is shown in part (ppl.locate)
            d.message = bounded(d.message)
        text = e.render()
        if (e.__cause__ is not None and not isinstance(e.__cause__, SiteError)
                and not getattr(e, "not_a_bug", False)):
            # raised while the model ran (ppl.locate); a SiteError is a refusal, not a bug,
            # and a value outside its support a data error
            saved = _save_traceback(args, e.__cause__, "bdl-error-traceback.txt")
            if saved:
                text += f"\n  note: if this looks like a bug in bdl, the traceback is in {saved}"
        print(text, file=sys.stderr)
        return EXIT_USER
    except _UserError as e:
        print(f"bdl: error: {e}", file=sys.stderr)
        return EXIT_USER
    except BrokenPipeError:  # `bdl info FILE | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("bdl: interrupted", file=sys.stderr)
        return 130
    except RecursionError as e:
        # a stage that walks the model recursively met a model deeper than Python's limit
        # (the parser refuses expressions deeper than ppl.syntax.parser.MAX_TREE_DEPTH)
        print(f"bdl: error: the model is nested too deeply for bdl ({e})", file=sys.stderr)
        return EXIT_USER
    except RuntimeError as e:
        # torch/pyro errors while evaluating the model: the model or data is at fault
        doing = " while running the model" if args.verb in ("run", "predict") else ""
        print(f"bdl: error{doing}: {bounded(str(e))}", file=sys.stderr)
        return EXIT_USER
    except Exception as e:  # noqa: BLE001
        log = _save_traceback(args, e, "bdl-internal-error.txt")
        saved = f"; traceback saved to {log}" if log else ""
        print(f"bdl: internal error ({type(e).__name__}: {bounded(str(e))}); please report "
              f"it{saved}",
              file=sys.stderr)
        return EXIT_INTERNAL


def _save_traceback(args, exc: BaseException, name: str) -> str | None:
    """Write ``exc``'s traceback to the file ``name`` in ``--out`` (or the temp folder);
    its path, or None when it cannot be written."""
    import tempfile
    import traceback

    where = Path(getattr(args, "out", None) or tempfile.gettempdir())
    try:
        where.mkdir(parents=True, exist_ok=True)
        log = where / name
        log.write_text("".join(traceback.format_exception(exc)))
    except OSError:
        return None
    return str(log)


if __name__ == "__main__":
    sys.exit(main())
