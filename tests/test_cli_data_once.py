"""`bdl run` and `bdl predict` read the data file once: the bytes parsed are the bytes
hashed (run.json's and predict.json's ``data_hash``), so a pipe works and a file that
changes under the run cannot give a hash of other data (``ppl.io.data.read_data``)."""
import builtins
import io
import json
import os
import runpy
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ppl.io.data import DataError, load_data, read_data
from ppl.io.run_folder import file_hash
from ppl.runtime.main import main as module_main

SRC = ("model M(x: real[N], y: real[N]) {\n  b ~ Normal(0, 1)\n  y ~ Normal(b * x, 1)\n}\n"
       "infer svi(steps=2, samples=5)\n")
DATA = b'{"x": [0.0, 1.0, 2.0], "y": [0.1, 1.2, 1.9]}\n'
# sha256 of DATA (`printf '...' | sha256sum`): what run.json recorded before, from a
# second read of the file
DATA_SHA = "72706435fb18a0ee22a718cb8669dc3082110dc6ae1758ae2304836a9af391a5"


@pytest.fixture
def opens(monkeypatch):
    """Names of the files opened (``open``, ``io.open``: pathlib's too), resolved."""
    seen: list[Path] = []
    real = io.open

    def counting(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)):
            seen.append(Path(file).resolve())
        return real(file, *args, **kwargs)

    monkeypatch.setattr(io, "open", counting)
    monkeypatch.setattr(builtins, "open", counting)
    return seen


def test_read_data_hashes_the_bytes_it_parses(tmp_path):
    p = tmp_path / "d.json"
    p.write_bytes(DATA)
    data, sha = read_data(p)
    assert data == {"x": [0.0, 1.0, 2.0], "y": [0.1, 1.2, 1.9]}
    assert sha == DATA_SHA == file_hash(p)


def test_bdl_run_and_predict_open_the_data_file_once(tmp_path, monkeypatch, bdl_here, opens):
    monkeypatch.chdir(tmp_path)
    Path("m.bdl").write_text(SRC)
    Path("d.json").write_bytes(DATA)
    opens.clear()  # the writes above
    r = bdl_here("run", "m.bdl", "--data", "d.json", "--out", "run", "-q")
    assert r.returncode == 0, r.stderr
    # before: twice (parsed, then hashed)
    assert opens.count(Path("d.json").resolve()) == 1
    assert json.loads(Path("run/run.json").read_text())["data_hash"] == DATA_SHA

    Path("new.json").write_bytes(b'{"x": [3.0, 4.0]}')
    opens.clear()
    r = bdl_here("predict", "m.bdl", "--posterior", "run", "--data", "new.json")
    assert r.returncode == 0, r.stderr
    assert opens.count(Path("new.json").resolve()) == 1
    record = json.loads(Path("run/predict.json").read_text())
    assert record["data_hash"] == file_hash("new.json")
    assert np.load("run/predictive.npz")["y"].shape == (5, 2)


def test_bdl_run_reads_its_data_from_a_pipe(tmp_path):
    """A FIFO gives its bytes to one reader: a second read of it waits for a writer that
    never comes (the subprocess's timeout)."""
    (tmp_path / "m.bdl").write_text(SRC)
    fifo = tmp_path / "d.json"
    os.mkfifo(fifo)

    def write():
        with open(fifo, "wb") as f:  # waits for the reader
            f.write(DATA)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        r = subprocess.run([sys.executable, "-m", "ppl.cli", "run", "m.bdl", "--data",
                            "d.json", "--out", "run", "-q"], capture_output=True, text=True,
                           cwd=tmp_path, timeout=90)
    finally:
        if writer.is_alive():  # bdl never opened it: let the writer go
            os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        writer.join(5)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "run" / "run.json").read_text())["data_hash"] == DATA_SHA


def test_data_files_that_cannot_be_read_are_data_errors(tmp_path):
    (tmp_path / "dir.json").mkdir()
    (tmp_path / "latin1.json").write_bytes(b'{"name": "caf\xe9"}')
    buf = io.BytesIO()
    np.save(buf, np.arange(3))
    (tmp_path / "one.npz").write_bytes(buf.getvalue())
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    # before: IsADirectoryError, UnicodeDecodeError, AttributeError, ValueError (exit 3)
    for name, words in [
        ("dir.json", "dir.json: cannot be read (Is a directory)"),
        ("latin1.json", "latin1.json: not UTF-8 text (a byte that is not UTF-8 at offset 13)"),
        ("one.npz", "one.npz: one array without a name (.npy), not a .npz of named arrays "
                    "(numpy.savez)"),
        ("junk.npz", "junk.npz: not a .npz file numpy can read"),
    ]:
        with pytest.raises(DataError) as e:
            load_data(tmp_path / name)
        assert str(e.value).startswith(f"{tmp_path / name}: {words.split(': ', 1)[1]}")


def test_csv_line_ends_read_alike(tmp_path):
    """CR LF and CR line ends read as LF, as the file's text once was (Path.read_text)."""
    for end in ("\n", "\r\n", "\r"):
        p = tmp_path / "d.csv"
        p.write_bytes(end.join(["\ufeffx,y[0],y[1]", "1,2.5,3", "2,NA,4"]).encode() + b"\n")
        d = load_data(p)
        assert d["x"].tolist() == [1, 2]
        assert np.array_equal(d["y"], [[2.5, 3.0], [np.nan, 4.0]], equal_nan=True)
    with pytest.raises(DataError) as e:
        load_data(p.write_bytes(b"x\r\n1\r\n\r\n") and p)
    assert str(e.value) == f"{p}:3: expected 1 values, found 0"


def _npy(values) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(values))
    return buf.getvalue()


def _zip(name: str, data: bytes, compress=zipfile.ZIP_STORED) -> bytes:
    """A zip of one member ``name`` holding ``data``, with a fixed time stamp."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), data, compress_type=compress)
    return buf.getvalue()


def _bad_npz() -> dict[str, tuple[bytes, str]]:
    """Damaged .npz files and the error each is (np.load reads a member only when it is
    asked for: before, each failed outside the guarded region, exit 3)."""
    deflated = bytearray(_zip("y.npy", _npy([1.0, 2.0, 3.0]), zipfile.ZIP_DEFLATED))
    # the first byte of the member's deflate stream (after its 30-byte local header and
    # name): block type 3, which no deflate stream holds
    deflated[30 + len("y.npy")] = 0xFF
    return {
        # before: EOFError: No data left in file
        "empty.npz": (b"", "empty file, not a .npz of named arrays (numpy.savez)"),
        "zlib.npz": (bytes(deflated), "not a .npz file numpy can read (zlib.error: Error -3 "
                                      "while decompressing data: invalid block type)"),
        # numpy's header parser meets an unclosed bracket
        "header.npz": (_zip("y.npy", _npy([1.0, 2.0, 3.0]).replace(b"(3,)", b"(3,(")),
                       "not a .npz file numpy can read (tokenize.TokenError: ('EOF in "
                       "multi-line statement', (2, 0)))"),
        "short.npz": (_zip("y.npy", _npy([1.0, 2.0, 3.0])[:-5]),
                      "not a .npz file numpy can read (ValueError: EOF: reading array data, "
                      "expected 24 bytes got 19)"),
        # before: data key 'a.txt' = b'hello'
        "text.npz": (_zip("a.txt", b"hello"), "'a.txt' is not a numpy array (.npy): a .npz "
                                              "holds named arrays only (numpy.savez)"),
    }


def test_a_damaged_npz_is_a_data_error_naming_it(tmp_path):
    for name, (raw, words) in _bad_npz().items():
        (tmp_path / name).write_bytes(raw)
        with pytest.raises(DataError) as e:
            load_data(tmp_path / name)
        assert str(e.value) == f"{tmp_path / name}: {words}"
    good = tmp_path / "good.npz"
    good.write_bytes(_zip("y.npy", _npy([1.0, 2.0, 3.0]), zipfile.ZIP_DEFLATED))
    assert load_data(good)["y"].tolist() == [1.0, 2.0, 3.0]


def test_bdl_run_and_the_module_refuse_a_damaged_npz_exit_1(tmp_path, monkeypatch, bdl_here,
                                                           capsys):
    monkeypatch.chdir(tmp_path)
    Path("m.bdl").write_text(SRC)
    assert bdl_here("compile", "m.bdl", "-o", "m.py").returncode == 0
    module = runpy.run_path("m.py")  # not as __main__: its main unrun
    for name, (raw, words) in _bad_npz().items():
        Path(name).write_bytes(raw)
        r = bdl_here("run", "m.bdl", "--data", name, "--out", "run", "-q")
        assert (r.returncode, r.stderr.splitlines()[-1]) == (1, f"bdl: error: {name}: {words}")
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            module_main(module["M"], module["M_SIGNATURE"], module["M_INFER"],
                        argv=[name, "-q"])
        err = capsys.readouterr().err
        assert e.value.code == 1
        assert err.splitlines()[-1] == f"error: {name}: {words}"
        assert "Traceback" not in err


def test_a_json_file_may_start_with_a_byte_order_mark(tmp_path):
    # before: d.json:1:1: invalid JSON: Unexpected UTF-8 BOM (CSV took one)
    p = tmp_path / "d.json"
    p.write_bytes(b"\xef\xbb\xbf" + DATA)
    data, sha = read_data(p)
    assert data == {"x": [0.0, 1.0, 2.0], "y": [0.1, 1.2, 1.9]}
    assert sha == file_hash(p) != DATA_SHA  # the bytes, mark and all
    # a bad byte's offset is where it is in the file, the mark counted
    p.write_bytes(b'\xef\xbb\xbf{"name": "caf\xe9"}')
    with pytest.raises(DataError) as e:
        load_data(p)
    assert str(e.value) == f"{p}: not UTF-8 text (a byte that is not UTF-8 at offset 16)"
