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
