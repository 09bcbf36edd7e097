"""Entry point of a generated module run on its own: ``python model.py DATA.json``."""

from __future__ import annotations

import json
import sys


def main(model, signature, infer: dict | None, transformed=None) -> None:
    """Bind DATA.json (argv[1]), run the module's infer settings, print the summary."""
    from ..infer.run import fit, resolve_options, torch_defaults
    from .data import bind

    data = {}
    if len(sys.argv) > 1:
        with open(sys.argv[1]) as f:
            data = json.load(f)
    spec = dict(infer or {"method": "nuts"})
    method = spec.pop("method")
    opts = resolve_options(method, spec)
    with torch_defaults(opts["device"], opts["dtype"]):
        kwargs = bind(signature, data)
        if transformed is not None:
            kwargs.update(transformed(**kwargs))
        result = fit(model, kwargs, method, opts, progress=True)
    print(result.summary())
