"""The distribution signature table cannot drift from Pyro, and `bdl check` stays torch-free.

The checker reads ``ppl/check/distributions.json`` instead of importing Pyro. Here the
table is regenerated from the installed Pyro and compared with the shipped file, so an
upgrade that adds, renames or re-parametrises a distribution fails this test until
``python -m ppl.check.gen_signatures`` is rerun and the result committed.
"""

import json
import subprocess
import sys
from pathlib import Path

from ppl.check import gen_signatures, signatures

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_table_matches_installed_pyro():
    table = gen_signatures.build_table()
    shipped_text = gen_signatures.TABLE_PATH.read_text()
    shipped = json.loads(shipped_text)
    added = sorted(set(table) - set(shipped))
    removed = sorted(set(shipped) - set(table))
    changed = sorted(k for k in set(table) & set(shipped) if table[k] != shipped[k])
    assert (added, removed, changed) == ([], [], []), (
        "distributions.json is stale; run `python -m ppl.check.gen_signatures`")
    # Byte for byte too: the file is exactly what the generator writes.
    assert gen_signatures.render(table) == shipped_text


def test_table_entries_the_checker_relies_on():
    normal = signatures.lookup("Normal")
    assert (normal.params, normal.required, normal.one_of) == (
        ("loc", "scale"), ("loc", "scale"), ())
    assert (normal.event_rank, normal.discrete) == (0, False)
    cat = signatures.lookup("Categorical")
    assert (cat.params, cat.one_of, cat.event_rank, cat.discrete) == (
        ("probs", "logits"), (("probs", "logits"),), 0, True)
    mvn = signatures.lookup("MultivariateNormal")
    assert mvn.params == ("loc", "covariance_matrix", "precision_matrix", "scale_tril")
    assert mvn.one_of == (("covariance_matrix", "precision_matrix", "scale_tril"),)
    assert mvn.event_rank == 1
    assert signatures.lookup("Normall") is None
    assert signatures.suggest("Normall", signatures.table()) == "Normal"
    assert signatures.suggest("halfcauchy", signatures.table()) == "HalfCauchy"


def test_check_does_not_import_torch():
    code = (
        "import sys\n"
        "from ppl.pipeline import front\n"
        "front(open('examples/eight_schools.bdl').read())\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'pyro' not in sys.modules, 'pyro was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
