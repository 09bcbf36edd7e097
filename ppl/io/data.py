"""Reading data files: Stan-style JSON (posteriordb files as they are), CSV and NPZ.

JSON and CSV are UTF-8 text (a leading byte-order mark allowed); JSON keeps ints as
ints. An NPZ's arrays are all read here, and a member that is not a ``.npy`` array is an
error. CSV has one column per name; a family of columns ``x[0]``, ``x[1]``... (or
``x.0``, ``x.1``...) becomes one vector ``x``, and ``x[0,1]`` a matrix. A CSV is read
strictly, each error at its ``file:line:col``: a family missing an index, a
column given twice, a header ``x[-1]`` (not an index), a blank cell (``NA``/``NaN`` spell
a missing value, read as NaN). In every format, an integer beyond int64 or a number that
overflows a 64-bit float (``1e309``) is an error naming the file and key (or cell), and
so are a key given twice in a JSON object and JSON nested too deeply to read.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import math
import re
import zipfile
from pathlib import Path

import numpy as np

_FAMILY = re.compile(
    r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(\[(?P<idx>[0-9, ]+)\]|\.(?P<dot>[0-9.]+))$")
# a header written as an element (x[...]) that is not one of a family: x[-1], x[a]
_BAD_ELEMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\[.*\]$")
# (lowest, highest) int64: what a data file's integers become (ppl.runtime.data.bind)
INT64_RANGE = (-(2 ** 63), 2 ** 63 - 1)


class DataError(ValueError):
    """A data file that cannot be read; the message names the file and the place."""


def load_data(path: str | Path) -> dict:
    """The data in the file at ``path`` (JSON, CSV or NPZ, by its suffix)."""
    return read_data(path)[0]


def read_data(path: str | Path) -> tuple[dict, str]:
    """The data in the file at ``path`` and the sha256 of its bytes (run.json's
    ``data_hash``, what ``ppl.io.run_folder.file_hash`` gives for the same file), from one
    read of the file: what is hashed is what was parsed, even for a pipe or a file that
    changes meanwhile."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such data file")
    suffix = p.suffix.lower()
    if suffix not in (".json", ".csv", ".npz"):
        raise DataError(f"{p}: unknown data format '{suffix}' (expected .json, .csv or .npz)")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise DataError(f"{p}: cannot be read ({e.strerror or e})") from None
    digest = hashlib.sha256(raw).hexdigest()
    if suffix == ".json":
        return _json(p, _text(p, raw)), digest
    if suffix == ".csv":
        return _csv(p, _text(p, raw)), digest
    return _npz(p, raw), digest


def _npz(p: Path, raw: bytes) -> dict:
    """The named arrays of the .npz file ``p`` (its bytes ``raw``), every one read here:
    ``np.load`` reads a member only when it is asked for, and a damaged one fails there in
    the words of whatever layer meets it (zlib, zipfile, numpy's header parser, EOFError),
    each a :class:`DataError` naming the file."""
    if not raw:
        raise DataError(f"{p}: empty file, not a .npz of named arrays (numpy.savez)")
    if raw.startswith(b"\x93NUMPY"):  # what np.load reads as one array
        raise DataError(f"{p}: one array without a name (.npy), not a .npz of named arrays "
                        "(numpy.savez)")
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            other = [n for n in zf.namelist() if not n.endswith(".npy")]
        if not other:
            with np.load(io.BytesIO(raw), allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
    except Exception as e:  # whatever fails while reading these bytes, the file is at fault
        kind = type(e).__name__ if type(e).__module__ == "builtins" else \
            f"{type(e).__module__}.{type(e).__name__}"  # zlib.error, tokenize.TokenError
        raise DataError(f"{p}: not a .npz file numpy can read ({kind}: {e})") from None
    # np.load gives such a member as its bytes under its whole name ('a.txt': b'hello')
    raise DataError(f"{p}: '{other[0]}' is not a numpy array (.npy): a .npz holds named "
                    "arrays only (numpy.savez)")


def _text(p: Path, raw: bytes) -> str:
    """``raw`` as UTF-8 text, as ``Path.read_text`` reads a file: CR LF and CR line ends
    made LF. A leading byte-order mark (an editor's or a spreadsheet's) is not text: a JSON
    or CSV file may start with one; a bad byte's offset counts it, as it is in the file."""
    bom = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        text = raw[bom:].decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: not UTF-8 text (a byte that is not UTF-8 at offset "
                        f"{bom + e.start})") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


class _Overflow(float):
    """A JSON number too large for a float (``1e309``; ``json`` reads it as inf), kept
    apart from ``Infinity`` so that :func:`_json` names it with its text."""

    text = ""


def _float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        value = _Overflow(value)
        value.text = text
    return value


def _object(pairs: list) -> dict:
    """A JSON object; a key given twice is an error (``json`` keeps the last silently)."""
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


class _DuplicateKey(Exception):
    pass


def number_problem(value) -> str | None:
    """What keeps the number ``value`` (a JSON or CSV number) from being data: an integer
    beyond int64, a number too large for a 64-bit float; None when it fits."""
    if isinstance(value, _Overflow):
        return f"the number {value.text} is too large: it overflows a 64-bit float (real)"
    if isinstance(value, int) and not isinstance(value, bool) \
            and not INT64_RANGE[0] <= value <= INT64_RANGE[1]:
        return (f"the integer {value} is too large: it is beyond a 64-bit integer (int, "
                f"{INT64_RANGE[0]} to {INT64_RANGE[1]})")
    return None


def _bad_number(value, path: tuple = ()) -> tuple[tuple, str] | None:
    """The first number of the (nested) JSON value ``value`` that :func:`number_problem`
    refuses: (its path of keys and indexes, the problem), or None."""
    if isinstance(value, (list, dict)):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for k, v in items:
            found = _bad_number(v, (*path, k))
            if found:
                return found
        return None
    why = number_problem(value)
    return (path, why) if why else None


def _json(p: Path, text: str) -> dict:
    # json reads 1e309 as inf and any integer exactly: only where the parse met such a
    # number is the whole value walked for its place (a walk doubles the time to read)
    met: list = []

    def noted(parse):
        def read(t: str):
            value = parse(t)
            if number_problem(value):
                met.append(value)
            return value
        return read

    try:
        data = json.loads(text, object_pairs_hook=_object, parse_float=noted(_float),
                          parse_int=noted(int))
    except json.JSONDecodeError as e:
        raise DataError(f"{p}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
    except _DuplicateKey as e:
        raise DataError(f"{p}: key '{e.args[0]}' appears twice in one JSON object (give "
                        "each key once)") from None
    except RecursionError:
        raise DataError(f"{p}: the JSON is nested too deeply to read") from None
    if not isinstance(data, dict):
        raise DataError(f"{p}: expected a JSON object of name: value pairs")
    found = _bad_number(data) if met else None
    if found:
        (key, *at), why = found
        where = f"'{key}'" + (f" element {', '.join(map(str, at))}" if at else "")
        raise DataError(f"{p}: {where}: {why}")
    return data


# the spellings of a missing value a CSV cell may hold (read as NaN, which only a
# construct with a missing-value convention accepts); a blank cell is an error
_MISSING = {"NA", "NAN"}


def _number(text: str, where: str):
    t = text.strip()
    if t == "":
        raise DataError(f"{where}: blank cell (write NA or NaN for a missing value, which "
                        "only a construct with a missing-value convention accepts)")
    if t.upper() in _MISSING:
        return float("nan")
    try:
        value = int(t)
    except ValueError:
        try:
            value = _float(t) if t.lower().lstrip("+-") not in ("inf", "infinity") \
                else float(t)
        except ValueError:
            raise DataError(f"{where}: '{text}' is not a number") from None
    why = number_problem(value)
    if why:
        raise DataError(f"{where}: {why}")
    return value


def _cell_cols(line: str) -> list[int]:
    """1-based character column where each comma-separated cell of ``line`` starts
    (commas inside double quotes do not separate)."""
    cols, quoted = [1], False
    for i, ch in enumerate(line):
        if ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            cols.append(i + 2)
    return cols


def _csv(p: Path, text: str) -> dict:
    lines = text.splitlines()
    reader = csv.reader(io.StringIO(text, newline=""))
    rows, starts, last = [], [], 0  # starts: the line each row begins on
    for row in reader:
        rows.append(row)
        starts.append(last + 1)
        last = reader.line_num
    if not rows:
        raise DataError(f"{p}: empty CSV file")

    def at(r: int, j: int) -> str:  # file:line:col of cell j of row r (0-based)
        line = starts[r]
        cols = _cell_cols(lines[line - 1]) if line <= len(lines) else []
        return f"{p}:{line}:{cols[j]}" if j < len(cols) else f"{p}:{line}"

    header, body = rows[0], rows[1:]
    names = [h.strip() for h in header]
    seen: dict[str, int] = {}
    for j, h in enumerate(names):
        if h in seen:
            raise DataError(f"{at(0, j)}: column '{h}' appears twice (also column "
                            f"{seen[h] + 1})")
        seen[h] = j
    cols: list[list] = [[] for _ in header]
    for r, row in enumerate(body, start=1):
        if len(row) != len(header):
            raise DataError(f"{p}:{starts[r]}: expected {len(header)} values, found {len(row)}")
        for j, cell in enumerate(row):
            cols[j].append(_number(cell, f"{at(r, j)}: column '{names[j]}'"))
    out: dict = {}
    families: dict[str, dict[tuple, tuple[int, list]]] = {}
    for j, (h, values) in enumerate(zip(names, cols, strict=True)):
        m = _FAMILY.match(h)
        if m is None and _BAD_ELEMENT.match(h):
            raise DataError(f"{at(0, j)}: column '{h}' is not an element of a family: its "
                            "index must be whole numbers >= 0 (x[0], x[1], ... or x[0,1] "
                            "for a matrix)")
        if m:
            idx_text = m.group("idx") or m.group("dot")
            idx = tuple(int(i) for i in re.split(r"[,.]", idx_text.replace(" ", "")) if i)
            parts = families.setdefault(m.group("name"), {})
            if parts and len(idx) != len(next(iter(parts))):
                first = names[next(iter(parts.values()))[0]]
                raise DataError(f"{at(0, j)}: column '{h}' has {len(idx)} "
                                f"ind{'ex' if len(idx) == 1 else 'ices'} but '{first}' "
                                f"has {len(next(iter(parts)))}")
            if idx in parts:
                raise DataError(f"{at(0, j)}: column '{h}' is the same element as "
                                f"'{names[parts[idx][0]]}'")
            parts[idx] = (j, values)
        else:
            out[h] = _column(values)
    for name, parts in families.items():
        if name in out:
            first = names[min(j for j, _ in parts.values())]
            raise DataError(f"{at(0, names.index(name))}: column '{name}' and the column "
                            f"family '{first}', ... both give '{name}'")
        shape = tuple(max(i[k] for i in parts) + 1 for k in range(len(next(iter(parts)))))
        if len(parts) != math.prod(shape):
            gone = _first_gap(parts, shape)
            spelled = f"{name}[{', '.join(str(i) for i in gone)}]"
            have = ", ".join(names[j] for j, _ in sorted(parts.values()))
            after = parts[min((i for i in parts if i > gone), default=max(parts))][0]
            raise DataError(f"{at(0, after)}: column family '{name}' ({have}) has no column "
                            f"{spelled}: a family needs every index from 0 to its largest")
        arr = np.empty((len(body), *shape))
        for idx, (_, values) in parts.items():
            arr[(slice(None), *idx)] = values
        if all(isinstance(v, int) for _, values in parts.values() for v in values):
            arr = arr.astype(np.int64)
        out[name] = arr
    return out


def _first_gap(parts, shape: tuple) -> tuple:
    """The first index (in row-major order) below ``shape`` that ``parts`` lacks, found
    in at most ``len(parts) + 1`` steps: the indexes are not all made (x[99999999999]
    would be 10**11 of them)."""
    def indexes(dims):  # row-major, lazily (itertools.product would list each range)
        if not dims:
            yield ()
            return
        for i in range(dims[0]):
            for rest in indexes(dims[1:]):
                yield (i, *rest)

    return next(i for i in indexes(shape) if i not in parts)


def _column(values: list):
    if all(isinstance(v, int) for v in values):
        return np.asarray(values, dtype=np.int64)
    return np.asarray(values, dtype=np.float64)
