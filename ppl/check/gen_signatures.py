"""Regenerate ``distributions.json``: the distribution signatures the checker needs.

The checker must not import torch or pyro (``bdl check`` is a linter-speed command), so
the facts it needs about ``pyro.distributions`` -- each class's argument names, which are
required, which are mutually exclusive alternatives, its support and event rank -- are
read off the installed Pyro once and stored as JSON. ``tests/test_signatures.py``
regenerates the table and compares, so it cannot drift from Pyro silently.

Run: ``python -m ppl.check.gen_signatures`` (rewrites the file in place).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

TABLE_PATH = Path(__file__).with_name("distributions.json")

# Classes that are bases or wrappers, not distributions a model names directly.
_SKIP = {
    "Distribution", "TorchDistribution", "ExponentialFamily", "ExpandedDistribution",
    "Independent", "MaskedDistribution", "Unit", "Rejector", "FoldedDistribution",
}
# Keyword groups where exactly one member must be given (Pyro/torch parametrisations).
_ALTERNATIVES = [
    ("probs", "logits"),
    ("covariance_matrix", "precision_matrix", "scale_tril"),
]


def _support_name(cls) -> str | None:
    support = cls.__dict__.get("support", None)
    for klass in cls.__mro__:
        if "support" in klass.__dict__:
            support = klass.__dict__["support"]
            break
    if support is None or isinstance(support, property):
        return None
    name = type(support).__name__
    if name in ("_DependentProperty", "DependentProperty", "_Dependent"):
        return None
    return str(support)


def _is_discrete(cls) -> bool:
    for klass in cls.__mro__:
        if "support" in klass.__dict__:
            try:
                if klass.__dict__["support"].is_discrete is True:
                    return True
            except (NotImplementedError, AttributeError):
                pass
            break
    return bool(getattr(cls, "has_enumerate_support", False))


def _event_rank(cls) -> int | None:
    for klass in cls.__mro__:
        if "support" in klass.__dict__:
            support = klass.__dict__["support"]
            try:
                ev = support.event_dim
            except (NotImplementedError, AttributeError):
                return None
            return ev if isinstance(ev, int) else None
    return None


def _arg_constraints(cls, params: list[str]) -> dict[str, str]:
    """Each parameter's constraint as text (``{"scale": "GreaterThan(lower_bound=0.0)"}``);
    empty where the class computes them from its values (Uniform's low < high)."""
    for klass in cls.__mro__:
        if "arg_constraints" in klass.__dict__:
            found = klass.__dict__["arg_constraints"]
            if not isinstance(found, dict):
                return {}
            return {k: str(v) for k, v in sorted(found.items()) if k in params}
    return {}


def build_table() -> dict:
    """Read every distribution class of ``pyro.distributions`` into a JSON-able dict."""
    import pyro.distributions as dist
    import torch

    table: dict[str, dict] = {}
    for name in sorted(dir(dist)):
        cls = getattr(dist, name)
        if not (isinstance(cls, type) and issubclass(cls, torch.distributions.Distribution)):
            continue
        if name in _SKIP or name.startswith("_"):
            continue
        try:
            sig = inspect.signature(cls.__init__)
        except (TypeError, ValueError):
            continue
        params, required, keyword_only = [], [], []
        var_args = False
        for pname, p in list(sig.parameters.items())[1:]:
            if pname == "validate_args":
                continue
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                var_args = True
                continue
            params.append(pname)
            if p.kind == p.KEYWORD_ONLY:  # ZeroInflatedPoisson(rate, *, gate=...)
                keyword_only.append(pname)
            if p.default is inspect.Parameter.empty:
                required.append(pname)
        groups = [list(g) for g in _ALTERNATIVES if all(x in params for x in g)]
        # only where there are some, so the other entries read as before
        table[name] = ({"keyword_only": keyword_only} if keyword_only else {}) | {
            "params": params,
            "required": required,
            "one_of": groups,
            "var_args": var_args,
            "support": _support_name(cls),
            "event_rank": _event_rank(cls),
            "discrete": _is_discrete(cls),
            "enumerable": bool(getattr(cls, "has_enumerate_support", False)),
            "arg_constraints": _arg_constraints(cls, params),
        }
    return table


def render(table: dict) -> str:
    return json.dumps(table, indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":
    TABLE_PATH.write_text(render(build_table()))
    print(f"wrote {TABLE_PATH}")
