"""The run folder: what a fit leaves on disk, for ``bdl predict`` and for Python.

``bdl run --out DIR`` and ``fit.save(DIR)`` write the same files: ``summary.csv``,
``samples.npz`` (every site as [chains, draws, ...declared shape]; runs written before
draws took their declared shape hold a latent of an outer plate as [.., N, 1], which
``bdl predict`` still reads), ``params.pt`` (the fitted
``pyro.param`` values and network weights), ``run.json`` (model, file fingerprint, data,
method and options, versions, point estimates) and, for svi/map, ``elbo.txt``.
``read_run`` reads them back; ``Model.predict_run`` and ``bdl predict`` condition the
model on new data with those draws.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..infer.fit import Fit
from ..infer.report import point_estimates


class RunFolderError(ValueError):
    """A folder that is not a run folder, or one that would be overwritten."""


def model_hash(text: str) -> str:
    """The model file's fingerprint in run.json (``bdl predict`` compares it)."""
    return hashlib.sha256(text.encode()).hexdigest()


def check_writable(out: Path, force: bool, flag: str = "--force") -> None:
    """Nothing a user wrote is overwritten without ``force`` (spelt ``flag`` to the user)."""
    if out.exists() and any(out.iterdir()) and not force:
        raise RunFolderError(f"{out} exists and is not empty; use {flag} to overwrite it")


def write_run(out: Path, fit: Fit, *, model: str, file: str | None, source: str,
              data_path: str | None = None, force: bool = False, summary=None) -> dict:
    """Write ``fit``'s run folder to ``out``; the run.json record is returned.
    ``summary``: ``fit.summary()`` when the caller has it already."""
    import numpy as np
    import pyro
    import torch

    from .. import __version__

    out = Path(out)
    check_writable(out, force, "force=True")
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.csv").write_text((summary or fit.summary()).to_csv())
    np.savez(out / "samples.npz", **{k: v.cpu().numpy() for k, v in fit.chains.items()})
    if fit.elbo:
        np.savetxt(out / "elbo.txt", np.asarray(fit.elbo))
    opts = fit.options
    run = {
        "model": model, "file": file,
        "model_hash": model_hash(source),
        "data": data_path,
        "data_hash": hashlib.sha256(Path(data_path).read_bytes()).hexdigest()
        if data_path else None,
        "infer": {"method": fit.method, **opts}, "seed": opts.get("seed"),
        "versions": {"ppl": __version__, "torch": torch.__version__,
                     "pyro": pyro.__version__},
        "wall_time_s": fit.wall_time, "device": opts.get("device"),
        "samples_layout": "[chains, draws, ...declared shape] per site",
        "point_estimates": point_estimates(fit.params),
    }
    (out / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    torch.save({k: v.cpu() for k, v in fit.params.items()}, out / "params.pt")
    return run


def read_record(folder) -> dict:
    """The run.json record of a run folder (a RunFolderError when it is not one)."""
    folder = Path(folder)
    if not (folder / "samples.npz").exists() or not (folder / "run.json").exists():
        raise RunFolderError(f"{folder}: not a run folder (expected samples.npz and run.json "
                             "from 'bdl run' or fit.save)")
    return json.loads((folder / "run.json").read_text())


def read_run(folder) -> tuple[dict, dict, dict | None]:
    """(run.json record, draws {site: [chains, draws, ...]}, params or None)."""
    import numpy as np
    import torch

    folder = Path(folder)
    run = read_record(folder)
    with np.load(folder / "samples.npz") as z:
        chains = {k: torch.as_tensor(z[k]) for k in z.files}
    params = None
    if (folder / "params.pt").exists():
        params = torch.load(folder / "params.pt", weights_only=True)
    return run, chains, params


def check_run(record: dict, chains: dict, folder, *, model: str, file: str, source: str,
              latents: list[str]) -> None:
    """The run must be of ``model``; a model file changed since the run is a warning that
    names the latents the run did not sample (they are drawn from their prior)."""
    import warnings

    if record.get("model") not in (None, model):
        raise RunFolderError(f"{folder} is a run of model '{record.get('model')}' (from "
                             f"{record.get('file')}), not of '{model}'")
    if record.get("model_hash") not in (None, model_hash(source)):
        unsampled = [n for n in latents if n not in chains]
        warnings.warn(f"{file} has changed since the run in {folder}"
                      + (f"; its latents {', '.join(unsampled)} were not sampled there and "
                         "are drawn from their prior" if unsampled else ""), stacklevel=3)
