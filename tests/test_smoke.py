"""End-to-end: the README's example compiles, fits and recovers the reference posterior."""

import json
from pathlib import Path

import ppl

ROOT = Path(__file__).resolve().parent.parent


def test_eight_schools_nuts_matches_reference_roughly():
    m = ppl.load(ROOT / "examples" / "eight_schools.bdl")
    data = json.loads((ROOT / "examples" / "eight_schools.data.json").read_text())
    fit = m.fit(data, samples=300, warmup=300, chains=2, seed=1)
    s = fit.summary()
    # posteriordb reference: mu 4.41 (sd 3.31), tau 3.60 (sd 3.20); MC error ~ sd/sqrt(ESS)
    assert abs(s["mu"]["mean"] - 4.41) < 0.5 * 3.31
    assert abs(s["tau"]["mean"] - 3.60) < 0.5 * 3.20
    assert fit.samples["theta"].shape == (600, 8)
    assert s["mu"]["r_hat"] < 1.05
