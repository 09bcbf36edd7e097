"""``bdl info``: a JSON description of a model for tools (as stanc's ``--info``)."""

from __future__ import annotations

from .check.checker import CheckedModel
from .check.sizes import show
from .infer.methods import without_site


def _type(sym) -> dict:
    shape = sym.ty.shape
    return {
        "type": sym.ty.kind,
        "dims": None if shape is None else [str(d) for d in shape],
    }


def model_info(cm: CheckedModel) -> dict:
    """Data arguments (types, sizes), latent sites, parameters, deterministic sites."""
    out: dict = {"name": cm.name, "sizes": list(cm.sizes), "data": {}, "latents": {},
                 "params": {}, "deterministic": {}, "transformed_data": {}, "networks": []}
    for arg in cm.model.args:
        sym = cm.symbols[arg.name]
        if sym.role == "size":
            continue
        entry = _type(sym)
        entry["optional"] = sym.optional
        out["data"][arg.name] = entry
    for name, sym in cm.symbols.items():
        if sym.role == "latent":
            out["latents"][name] = _type(sym)
        elif sym.role == "param":
            out["params"][name] = _type(sym)
        elif sym.role == "deterministic":
            out["deterministic"][name] = _type(sym)
        elif sym.role == "transformed":
            out["transformed_data"][name] = _type(sym)
        elif sym.role == "network":
            out["networks"].append(name)
    if cm.infer is not None:
        out["infer"] = {"method": cm.infer.method, **without_site(cm.infer.options)}
    out["shape_text"] = {n: show(s.ty.shape) for n, s in cm.symbols.items()
                         if s.role in ("data", "latent", "deterministic", "param")}
    if cm.guide is not None:  # the guide block's own params and networks
        g = cm.guide.symbols
        out["guide"] = {"params": {n: _type(s) for n, s in g.items() if s.role == "param"},
                        "networks": [n for n, s in g.items() if s.role == "network"]}
    return out
