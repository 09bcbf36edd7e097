"""Reading data files: Stan-style JSON (posteriordb files as they are), CSV and NPZ.

JSON keeps ints as ints. CSV has one column per name; a family of columns ``x[0]``,
``x[1]``... (or ``x.0``, ``x.1``...) becomes one vector ``x``, and ``x[0,1]`` a matrix.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np

_FAMILY = re.compile(
    r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(\[(?P<idx>[0-9, ]+)\]|\.(?P<dot>[0-9.]+))$")


class DataError(ValueError):
    """A data file that cannot be read; the message names the file and the place."""


def load_data(path: str | Path) -> dict:
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such data file")
    suffix = p.suffix.lower()
    if suffix == ".json":
        return _json(p)
    if suffix == ".csv":
        return _csv(p)
    if suffix == ".npz":
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    raise DataError(f"{p}: unknown data format '{suffix}' (expected .json, .csv or .npz)")


def _json(p: Path) -> dict:
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{p}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
    if not isinstance(data, dict):
        raise DataError(f"{p}: expected a JSON object of name: value pairs")
    return data


def _number(text: str, where: str):
    t = text.strip()
    if t == "" or t.upper() == "NA" or t.lower() == "nan":
        return float("nan")
    try:
        return int(t)
    except ValueError:
        try:
            return float(t)
        except ValueError:
            raise DataError(f"{where}: '{text}' is not a number") from None


def _csv(p: Path) -> dict:
    with p.open(newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise DataError(f"{p}: empty CSV file")
    header, body = rows[0], rows[1:]
    cols: dict[str, list] = {h: [] for h in header}
    for r, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DataError(f"{p}:{r}: expected {len(header)} values, found {len(row)}")
        for h, cell in zip(header, row, strict=False):
            cols[h].append(_number(cell, f"{p}:{r} column '{h}'"))
    out: dict = {}
    families: dict[str, dict[tuple, list]] = {}
    for h, values in cols.items():
        m = _FAMILY.match(h.strip())
        if m:
            idx_text = m.group("idx") or m.group("dot")
            idx = tuple(int(i) for i in re.split(r"[,.]", idx_text.replace(" ", "")) if i)
            families.setdefault(m.group("name"), {})[idx] = values
        else:
            out[h.strip()] = _column(values)
    for name, parts in families.items():
        shape = tuple(max(i[k] for i in parts) + 1 for k in range(len(next(iter(parts)))))
        n = len(next(iter(parts.values())))
        arr = np.full((n, *shape), np.nan)
        for idx, values in parts.items():
            arr[(slice(None), *idx)] = values
        if all(float(v).is_integer() for v in arr.flat if v == v):
            if not np.isnan(arr).any():
                arr = arr.astype(np.int64)
        out[name] = arr
    return out


def _column(values: list):
    if all(isinstance(v, int) for v in values):
        return np.asarray(values, dtype=np.int64)
    return np.asarray(values, dtype=np.float64)
