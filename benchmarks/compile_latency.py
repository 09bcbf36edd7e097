"""Compile latency per example: parse + check + generate (target: <= 20 ms per model).

For every ``examples/*.bdl``: the median over ``--repeats`` runs of
``ppl.pipeline.compile_source`` (parse with lark, check names/types/sizes, lower to IR,
generate the Pyro source), after one untimed warm-up compile so that imports and the lark
parser's construction are not counted. The stages are also timed on their own (parse,
check, lower + generate). Executing the generated source (``ppl.compile`` does that too)
is not part of compiling and is shown apart as ``exec_ms``.

Prints one table (rows: example names; column ``ms`` and the stage columns) and writes
``{example: {column: number}}`` with ``--json OUT``.

    python benchmarks/compile_latency.py [--repeats 21] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

from ppl.backends.pyro import generate

from ppl.check.checker import check
from ppl.lower import lower
from ppl.pipeline import compile_source
from ppl.syntax.parser import parse

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ("ms", "parse_ms", "check_ms", "generate_ms", "exec_ms")


def _median_ms(fn, repeats: int, setup=None) -> float:
    """Median wall time of ``fn(setup())``; ``setup`` (untimed) makes a fresh input."""
    times = []
    for _ in range(repeats):
        arg = setup() if setup is not None else None
        t = time.perf_counter()
        fn(arg)
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def measure(path: Path, repeats: int) -> dict[str, float]:
    text, name = path.read_text(), str(path)
    compiled = compile_source(text, name)            # warm-up, and fails loudly if broken

    def fresh_parse():
        return parse(text, name)

    def fresh_check():
        return check(parse(text, name), name, text)

    def stage_generate(checked):
        irs = {n: lower(cm, name) for n, cm in checked.models.items()}
        return generate(list(irs.values()), name)

    def stage_exec(_):
        exec(compile(compiled.python, name, "exec"), {"__name__": "bench"})

    return {
        "ms": _median_ms(lambda _: compile_source(text, name), repeats),
        "parse_ms": _median_ms(lambda _: fresh_parse(), repeats),
        "check_ms": _median_ms(lambda prog: check(prog, name, text), repeats, fresh_parse),
        "generate_ms": _median_ms(stage_generate, repeats, fresh_check),
        "exec_ms": _median_ms(stage_exec, repeats),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--json", metavar="OUT")
    ap.add_argument("--examples", default=str(ROOT / "examples"))
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    table, failed = {}, {}
    for path in sorted(Path(args.examples).glob("*.bdl")):
        try:
            table[path.stem] = measure(path, args.repeats)
        except Exception as e:  # report it and go on with the others
            failed[path.stem] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
    width = max([len(k) for k in table] + [8]) + 2
    print(f"{'':<{width}}" + "".join(f"{c:>13}" for c in COLUMNS))
    for row, cols in table.items():
        print(f"{row:<{width}}" + "".join(f"{cols[c]:>13.2f}" for c in COLUMNS))
    if table:
        worst = max(table, key=lambda k: table[k]["ms"])
        print(f"max ms: {table[worst]['ms']:.2f} ({worst}); median over examples: "
              f"{statistics.median(c['ms'] for c in table.values()):.2f}")
    for row, err in failed.items():
        print(f"FAILED {row}: {err}", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    main()
