import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("BDL_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture
def data_dir() -> Path:
    if not DATA.exists():
        pytest.skip(f"benchmark data not found at {DATA} (set BDL_DATA)")
    return DATA


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
