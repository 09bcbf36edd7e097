"""`bdl run` and `bdl predict` read the data file once: the bytes parsed are the bytes
hashed (run.json's and predict.json's ``data_hash``), so a pipe works and a file that
changes under the run cannot give a hash of other data (``ppl.io.data.read_data``)."""
import builtins
import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from ppl.io.data import DataError, load_data, read_data
from ppl.io.run_folder import file_hash

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
