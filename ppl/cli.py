"""The ``bdl`` command: check, compile, run.

Exit status, as in stanc: 0 success, 1 the model or its data is wrong (located errors on
stderr, never a traceback), 124 the command line is wrong, 125 an internal error.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

EXIT_USER, EXIT_USAGE, EXIT_INTERNAL = 1, 124, 125


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        print(f"bdl: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _read(path: str) -> str:
    p = Path(path)
    if not p.exists():
        raise _UserError(f"{path}: no such file")
    try:
        return p.read_text()
    except UnicodeDecodeError:
        raise _UserError(f"{path}: not a text file (UTF-8 expected)") from None


class _UserError(Exception):
    pass


def _print_warnings(warnings, filename, text) -> None:
    for w in warnings:
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
    compiled = compile_source(text, args.file)
    _print_warnings(compiled.checked.warnings, args.file, text)
    if args.model is not None and args.model not in compiled.ir:
        raise _UserError(f"{args.file}: no model named '{args.model}'")
    if args.output:
        out = Path(args.output)
        if out.exists() and not args.force:
            raise _UserError(f"{out} exists; use --force to overwrite it")
        out.write_text(compiled.python)
        print(f"wrote {out}", file=sys.stderr)
    else:
        sys.stdout.write(compiled.python)
    return 0


def _default_data(path: str) -> str | None:
    p = Path(path)
    cand = p.with_name(p.name[: -len(p.suffix)] + ".data.json") if p.suffix else None
    return str(cand) if cand is not None and cand.exists() else None


def _load_data(path: str | None) -> dict:
    from .io.data import DataError, load_data

    if path is None:
        return {}
    try:
        return load_data(path)
    except DataError as e:
        raise _UserError(str(e)) from None


def cmd_run(args) -> int:
    import numpy as np

    from . import __version__
    from .model import Model
    from .pipeline import compile_source

    text = _read(args.file)
    compiled = compile_source(text, args.file)
    _print_warnings(compiled.checked.warnings, args.file, text)
    model = Model(compiled, args.model)
    data_path = args.data or _default_data(args.file)
    data = _load_data(data_path)
    overrides = {}
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.device is not None:
        overrides["device"] = args.device
    if args.dtype is not None:
        overrides["dtype"] = args.dtype
    method, opts = model.resolve_infer(args.infer, **overrides)
    out = Path(args.out) if args.out else Path("runs") / (
        f"{model.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    if out.exists() and any(out.iterdir()) and not args.force:
        raise _UserError(f"{out} exists and is not empty; use --force to overwrite it")
    print(f"{model.name}: {method}({', '.join(f'{k}={v}' for k, v in opts.items())})",
          file=sys.stderr)
    fit = model.fit(data, method, progress=not args.quiet, **opts)
    summary = fit.summary()
    print(summary)
    if fit.elbo:
        print(f"\nfinal ELBO: {fit.elbo[-1]:.6g} (mean of last 10%: "
              f"{np.mean(fit.elbo[-max(1, len(fit.elbo) // 10):]):.6g})")
    if getattr(fit, "divergences", 0):
        print(f"\nwarning: {fit.divergences} divergent transitions", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.csv").write_text(summary.to_csv())
    np.savez(out / "samples.npz", **{k: v.cpu().numpy() for k, v in fit.chains.items()})
    if fit.elbo:
        np.savetxt(out / "elbo.txt", np.asarray(fit.elbo))
    import pyro
    import torch

    run = {
        "model": model.name, "file": args.file,
        "model_hash": hashlib.sha256(text.encode()).hexdigest(),
        "data": data_path,
        "data_hash": hashlib.sha256(Path(data_path).read_bytes()).hexdigest()
        if data_path else None,
        "infer": {"method": method, **opts}, "seed": opts["seed"],
        "versions": {"ppl": __version__, "torch": torch.__version__,
                     "pyro": pyro.__version__},
        "wall_time_s": fit.wall_time, "device": opts["device"],
        "samples_layout": "[chains, draws, ...] per site",
    }
    (out / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    print(f"\nwrote {out}/ (summary.csv, samples.npz, run.json)", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = _Parser(prog="bdl", description="BDL: Bayesian deep learning models compiled to Pyro.")
    p.add_argument("--version", action="version", version=f"bdl {__version__}")
    sub = p.add_subparsers(dest="verb", required=True, parser_class=_Parser)

    c = sub.add_parser("check", help="parse and check models (fast; no torch)")
    c.add_argument("files", nargs="+")
    c.add_argument("-q", "--quiet", action="store_true")
    c.set_defaults(func=cmd_check)

    c = sub.add_parser("compile", help="print the generated Pyro source")
    c.add_argument("file")
    c.add_argument("-o", "--output")
    c.add_argument("--model")
    c.add_argument("--force", action="store_true")
    c.set_defaults(func=cmd_compile)

    c = sub.add_parser("run", help="fit a model and print its posterior summary")
    c.add_argument("file")
    c.add_argument("--data")
    c.add_argument("--model")
    c.add_argument("--infer", help='e.g. "nuts(samples=500)" or "svi(steps=2000)"')
    c.add_argument("--device", choices=["cpu", "cuda"])
    c.add_argument("--dtype", choices=["float32", "float64"])
    c.add_argument("--seed", type=int)
    c.add_argument("--out")
    c.add_argument("--force", action="store_true")
    c.add_argument("-q", "--quiet", action="store_true")
    c.set_defaults(func=cmd_run)
    return p


def main(argv: list[str] | None = None) -> int:
    from .syntax.diagnostics import BdlError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BdlError as e:
        print(e.render(), file=sys.stderr)
        return EXIT_USER
    except _UserError as e:
        print(f"bdl: error: {e}", file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        print("bdl: interrupted", file=sys.stderr)
        return 130
    except RuntimeError as e:
        # torch/pyro errors while evaluating the model: the model or data is at fault
        print(f"bdl: error while running the model: {e}", file=sys.stderr)
        return EXIT_USER
    except Exception as e:  # noqa: BLE001
        print(f"bdl: internal error ({type(e).__name__}: {e}); please report it",
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
