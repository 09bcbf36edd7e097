import contextlib
import functools
import importlib.util
import io
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("BDL_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture
def data_dir() -> Path:
    if not DATA.exists():
        pytest.skip(f"benchmark data not found at {DATA} (set BDL_DATA)")
    return DATA


@functools.cache
def load_benchmark(name: str) -> ModuleType:
    """benchmarks/<name>.py as a module, executed once per session (tests share it: a
    script's import is seconds of setup)."""
    where = str(ROOT / "benchmarks")
    sys.path.insert(0, where)   # the scripts import each other (fbm_sampling's helpers)
    try:
        spec = importlib.util.spec_from_file_location(f"{name}_bench", ROOT / "benchmarks" /
                                                      f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(where)
    return mod


@pytest.fixture
def bench():
    """The cached loader of the benchmark scripts: ``bench("fsde_hurst")``."""
    return load_benchmark


def _bdl_here(*args) -> subprocess.CompletedProcess:
    from ppl.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


@pytest.fixture
def bdl_here():
    """``bdl_here("run", FILE, ...)``: the bdl command through ``ppl.cli.main`` in this
    process; the CompletedProcess's returncode is the exit status ``python -m ppl.cli``
    exits with (``sys.exit(main())``), stdout and stderr what it printed. For refusals and
    small runs, where a subprocess would be mostly the import of torch (seconds)."""
    return _bdl_here


@contextlib.contextmanager
def default_dtype(dtype=None):
    """torch's default dtype is ``dtype`` within (None: left as it is), and back to what it
    was before afterwards, whatever ran inside set (a benchmark's ``--dtype``): ``with
    default_dtype(torch.float32):`` in a test or helper (``from conftest import
    default_dtype``), the :func:`float64` fixture for a whole test."""
    import torch

    before = torch.get_default_dtype()
    if dtype is not None:
        torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


@pytest.fixture
def float64():
    """torch's default dtype is float64 for the test (densities compared to 1e-9), and
    back to what it was after."""
    import torch

    with default_dtype(torch.float64):
        yield


def _devices() -> list:
    import torch

    out = ["cpu"]
    out.append(pytest.param("cuda", marks=pytest.mark.skipif(
        not torch.cuda.is_available(), reason="CUDA is not available on this machine")))
    return out


@pytest.fixture(params=_devices())
def device(request) -> str:
    """Device-parametrised tests run on the CPU everywhere and on CUDA where it exists."""
    return request.param


def pytest_configure(config):
    # The suite's models are small: one intra-op thread is faster for them and keeps
    # timings steady when the two CI cores are shared.
    import torch

    torch.set_num_threads(1)
