"""The run folder: what a fit leaves on disk, for ``bdl predict`` and for Python.

``bdl run --out DIR`` and ``fit.save(DIR)`` write the same files: ``summary.csv``,
``samples.npz`` (every site as [chains, draws, ...declared shape]; runs written before
draws took their declared shape hold a latent of an outer plate as [.., N, 1], which ``bdl
predict`` still reads), ``params.pt`` (the fitted ``pyro.param`` values and network
weights), ``run.json`` (model, file fingerprint, data and its hash, method and options,
versions and environment, point estimates, and what the fit measured: ``meta`` for infer
meta, ``np_eval`` and ``train_loss`` for np_train) and, for svi/map, ``elbo.txt``.
run.json's ``files`` lists what the run wrote there (``bdl predict`` adds
``predictive.npz`` and its record ``predict.json`` when it writes into the folder).
Written over an existing folder (``force``), only the files an earlier run recorded so
(and a saved traceback) are removed first, never a file the new run reads (``--data``): a
folder without BDL's run.json is someone else's, and files of the same names there stay or
are overwritten, not removed. ``read_run`` reads them back; ``Model.predict_run`` and
``bdl predict`` condition the model on new data with those draws.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path

from ..infer.fit import Fit
from ..infer.report import point_estimates


class RunFolderError(ValueError):
    """A folder that is not a run folder, or one that would be overwritten."""


def model_hash(text: str) -> str:
    """The model file's fingerprint in run.json (``bdl predict`` compares it)."""
    return hashlib.sha256(text.encode()).hexdigest()


# what a run may write into its folder (write_run, the plots, --arviz): a file the run
# reads (its --data) must not be one of them
RUN_WRITES = ("summary.csv", "samples.npz", "elbo.txt", "run.json", "params.pt",
              "trace.png", "elbo.png", "posterior.nc")
RUN_PATTERNS = ("predictive_*.png",)
# a run.json written before run folders listed their files ("files") was written with
# these; the plots, posterior.nc and predictive.npz beside it may be the user's
LEGACY_FILES = ("summary.csv", "samples.npz", "elbo.txt", "run.json", "params.pt")
# names only BDL gives a file (ppl.cli._save_traceback), written by a run that failed and
# so recorded nowhere: --force removes them
TRACEBACKS = ("bdl-error-traceback.txt", "bdl-internal-error.txt")


def file_hash(path) -> str:
    """The sha256 of a file's bytes (run.json's ``data_hash``)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def data_fingerprint(values: dict) -> str:
    """The sha256 of data given as arrays (``fit.save``'s ``data_hash``, kind
    ``"arrays"``): of each key, sorted, with its value's dtype, shape and bytes (a tensor
    as its CPU array, a number or a list as numpy reads it, None as none), so the same
    values in another key order hash alike and one changed value, dtype or shape does not.
    Not comparable with a data file's :func:`file_hash` (kind ``"file"``)."""
    import numpy as np
    import torch

    h = hashlib.sha256(b"bdl-data-arrays-v1\0")
    for key in sorted(values, key=str):
        v = values[key]
        if isinstance(v, dict):
            head, body = "dict", data_fingerprint(v).encode()
        elif v is None:
            head, body = "none", b""
        else:
            a = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
            if a.dtype.kind == "O":
                head, body = f"object {a.shape}", repr(a.tolist()).encode()
            else:
                a = np.ascontiguousarray(a)
                head, body = f"{a.dtype.str} {a.shape}", a.tobytes()
        for part in (str(key).encode(), head.encode(), body):
            h.update(len(part).to_bytes(8, "little") + part)
    return h.hexdigest()


def source_commit(timeout: float = 5.0, where=None) -> tuple[str | None, bool | None]:
    """(the git commit, whether tracked files differ from it) of the checkout that holds
    the ppl sources (an editable install); (None, None) when they are not in a git
    checkout (an installed package: its version says which code it is), git is missing or
    does not answer within ``timeout`` seconds. Never an error. A package installed inside
    some other repository (a virtual environment in a project's checkout) is not that
    repository's code: git must track ``ppl/__init__.py`` itself. ``where``: another
    package folder (tests)."""
    here = Path(where) if where is not None else Path(__file__).resolve().parent.parent

    # the folder decides the repository, not a GIT_DIR of the caller's (a git hook's)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}

    def git(*args):
        return subprocess.run(["git", *args], cwd=here, capture_output=True, text=True,
                              timeout=timeout, check=True, env=env).stdout

    try:
        git("ls-files", "--error-unmatch", "__init__.py")
        commit = git("rev-parse", "HEAD").strip() or None
        dirty = bool(git("status", "--porcelain", "--untracked-files=no").strip())
    except (OSError, subprocess.SubprocessError, ValueError):
        return None, None
    return commit, dirty


def environment() -> dict:
    """Which code, on what, made a run (run.json's ``versions`` and ``environment``,
    predict.json's too): the versions of ppl, its git commit and whether the checkout
    had uncommitted changes to tracked files (None outside a checkout), python, numpy,
    torch and pyro; the platform and torch's CPU thread count (float32 reductions, as in
    np_train and infer meta, can differ in the last digits between thread counts)."""
    import numpy as np
    import pyro
    import torch

    from .. import __version__

    commit, dirty = source_commit()
    return {
        "versions": {"ppl": __version__, "ppl_commit": commit, "ppl_dirty": dirty,
                     "python": platform.python_version(), "numpy": np.__version__,
                     "torch": torch.__version__, "pyro": pyro.__version__},
        "environment": {"platform": platform.platform(), "machine": platform.machine(),
                        "python_implementation": sys.implementation.name,
                        "torch_threads": torch.get_num_threads()},
    }


def check_folder(out: Path, name: str = "--out") -> None:
    """``out`` is a folder or can be made one: a file at ``out`` or at a folder above it is
    a RunFolderError (not the OSError that making it would raise); ``name``: what gave
    ``out`` (``--out``, ``fit.save's path``)."""
    out = Path(out)
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                what = "is a file" if p == out else f"is under {p}, which is a file"
                raise RunFolderError(f"{out} {what}; {name} names a folder")
            return


def check_writable(out: Path, force: bool, flag: str = "--force") -> None:
    """Nothing a user wrote is overwritten without ``force`` (spelt ``flag`` to the user).
    A folder that holds only a saved traceback (:data:`TRACEBACKS`, a failed run's) is
    written without ``force``, that file removed first (:func:`clear_run`)."""
    check_folder(out)
    if out.exists() and not force and any(p.name not in TRACEBACKS or not p.is_file()
                                          for p in out.iterdir()):
        raise RunFolderError(f"{out} exists and is not empty; use {flag} to overwrite it")


def check_creatable(out: Path, what: str = "--out") -> None:
    """A RunFolderError, before a fit, when the folder ``out`` cannot be written (made
    under ``/proc``, a missing drive, a read-only place, under a file): it is made and a
    file written and removed there, then the folders made for it are removed again, so a
    fit that fails leaves nothing behind."""
    import tempfile

    check_folder(out, what)
    out = Path(out)
    made = [p for p in (out, *out.parents) if not p.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".bdl-probe-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise RunFolderError(f"{what} {out} cannot be written ({e.strerror or e})") from None
    finally:
        for q in made:  # innermost first
            try:
                q.rmdir()
            except OSError:
                break


def recorded_files(out: Path) -> list[str] | None:
    """The files an earlier BDL run recorded in ``out``: its run.json's ``files`` (and
    run.json), :data:`LEGACY_FILES` for a run.json of BDL's written before ``files``;
    None when ``out`` holds no run.json of BDL's (a folder BDL did not write)."""
    record = _bdl_record(out)
    if record is None:
        return None
    files = record.get("files")
    if isinstance(files, list) and all(isinstance(n, str) for n in files):
        # plain names in the folder only: a hand-edited list never reaches outside it
        return sorted({n for n in files if n not in ("", ".", "..") and Path(n).name == n}
                      | {"run.json"})
    return list(LEGACY_FILES)


def clear_run(out: Path, keep=()) -> list[str]:
    """Remove what an earlier run left in ``out`` (:func:`recorded_files`, a saved
    traceback), so that a run written with ``force`` leaves only its own; no other file
    (the user's) is removed, nor any of ``keep`` (paths the new run reads: its data).
    The names removed, sorted."""
    out = Path(out)
    if not out.is_dir():
        return []
    kept = {Path(p).resolve() for p in keep if p is not None}
    names = [*(recorded_files(out) or ()), *TRACEBACKS]
    old = {out / n for n in names if (out / n).is_file() and not (out / n).is_symlink()}
    old = sorted(p for p in old if p.resolve() not in kept)
    for p in old:
        p.unlink()
    return [p.name for p in old]


def check_reads(out: Path, path, flag: str = "--data", folder: str = "--out") -> None:
    """A RunFolderError when the file ``path`` that a run reads would be overwritten by
    what the run writes into ``out`` (:data:`RUN_WRITES`, the predictive plots); ``flag``
    and ``folder`` name the two to the user."""
    if path is None:
        return
    p = Path(path).resolve()
    if p.parent != Path(out).resolve():
        return
    if p.name in RUN_WRITES or any(p.match(pat) for pat in RUN_PATTERNS):
        raise RunFolderError(f"{flag} {path} is inside {folder} and would be overwritten "
                             f"(a run writes its own {p.name} there); move the data file or "
                             f"choose another {folder}")


def record_files(out: Path, names) -> None:
    """Add ``names`` (files just written into ``out``) to the ``files`` of its run.json,
    so that ``force`` removes them with the run; nothing when ``out`` holds no run.json
    of BDL's that lists its files."""
    record = _bdl_record(out)
    if record is None or not isinstance(record.get("files"), list):
        return
    new = [n for n in names if n not in record["files"]]
    if new:
        record["files"] = [*record["files"], *new]
        (Path(out) / "run.json").write_text(json.dumps(record, indent=2) + "\n")


def _bdl_record(out: Path) -> dict | None:
    """The run.json in ``out`` when BDL wrote it (it has ``model_hash`` and
    ``samples_layout``), else None: no run.json, an unreadable one, or another tool's,
    whose files are the user's (never removed, never written)."""
    try:
        record = json.loads((Path(out) / "run.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(record, dict) or "model_hash" not in record \
            or "samples_layout" not in record:
        return None
    return record


def write_run(out: Path, fit: Fit, *, model: str, file: str | None, source: str,
              data_path: str | None = None, data_hash: str | None = None,
              data_values: dict | None = None, force: bool = False, summary=None) -> dict:
    """Write ``fit``'s run folder to ``out``; the run.json record is returned.
    ``data_hash``: the data file's :func:`file_hash` when it was read (else it is hashed
    here, before anything in ``out`` is removed or written; the data file is never
    removed); run.json's ``data_hash_kind`` is then ``"file"``. Without a data file,
    ``data_values`` (``fit.save``: the data as the model was given them, bound) are hashed
    by :func:`data_fingerprint`, kind ``"arrays"``. ``summary``: ``fit.summary()`` when
    the caller has it already."""
    import numpy as np
    import torch

    out = Path(out)
    if data_path and data_hash is None:
        data_hash = file_hash(data_path)
    kind = "file" if data_path else None
    if not data_path and data_values is not None:
        data_hash, kind = data_fingerprint(data_values), "arrays"
    check_writable(out, force, "force=True")
    check_reads(out, data_path, "data_path", "the run folder")
    clear_run(out, keep=[data_path, file])
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
        "data_hash": data_hash if kind else None, "data_hash_kind": kind,
        "infer": {"method": fit.method, **opts}, "seed": opts.get("seed"),
        **environment(),
        "wall_time_s": fit.wall_time, "device": opts.get("device"),
        "samples_layout": "[chains, draws, ...declared shape] per site",
        "point_estimates": point_estimates(fit.params),
        "sites": sorted(fit.chains),  # samples.npz's (bdl predict checks them)
        **fit_results(fit),
        "files": run_files(fit),
    }
    (out / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    torch.save({k: v.cpu() for k, v in fit.params.items()}, out / "params.pt")
    return run


# what ``bdl predict`` writes (:func:`write_predict`)
PREDICT_WRITES = ("predictive.npz", "predict.json")


def predict_record(*, model: str, file: str, source: str, posterior, run: dict,
                   data_path: str, data_hash: str, seed: int | None, draws: int | None,
                   pred: dict) -> dict:
    """predict.json: what ``bdl predict`` was asked and read, beside its predictive.npz —
    the model (its file's hash), the run folder (as given; its model hash and the hash of
    its samples.npz, the draws predicted from), the new data's file and hash (kind
    ``"file"``), the seed, the draws asked for (``draws``: None, all) and made
    (``num_draws``), each predicted site's shape, versions and environment."""
    posterior = Path(posterior)
    samples = posterior / "samples.npz"
    first = next(iter(pred.values()), None)
    return {
        "predictive": "predictive.npz",
        "model": model, "file": file, "model_hash": model_hash(source),
        "posterior": str(posterior), "posterior_model_hash": run.get("model_hash"),
        "posterior_samples_hash": file_hash(samples) if samples.is_file() else None,
        "data": data_path, "data_hash": data_hash, "data_hash_kind": "file",
        "seed": seed, "draws": draws,
        "num_draws": int(first.shape[0]) if first is not None and first.dim() else None,
        "sites": {k: list(v.shape) for k, v in pred.items()},
        **environment(),
        "files": list(PREDICT_WRITES),
    }


def write_predict(out: Path, pred: dict, record: dict) -> list[str]:
    """Write ``pred`` (predictive.npz) and ``record`` (predict.json, :func:`predict_record`)
    into ``out``, replacing files of those names (the caller asked, ``--force``); when
    ``out`` is a run folder its run.json records both (:func:`record_files`), so that a
    ``bdl run --force`` there removes them. The names written."""
    import numpy as np

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / PREDICT_WRITES[0], **{k: v.cpu().numpy() for k, v in pred.items()})
    (out / PREDICT_WRITES[1]).write_text(json.dumps(record, indent=2) + "\n")
    record_files(out, PREDICT_WRITES)
    return list(PREDICT_WRITES)


def _json_small(value, max_list: int = 32):
    """``value`` as JSON when it is a number, a string, a short list or a dict of such;
    None for tensors and long histories (they are not a run's report)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None  # JSON has no NaN
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, dict):
        out = {str(k): _json_small(v, max_list) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not None} or None
    if isinstance(value, (list, tuple)) and len(value) <= max_list:
        out = [_json_small(v, max_list) for v in value]
        return None if any(v is None for v in out) else out
    return None


def fit_results(fit: Fit) -> dict:
    """What a fit measured besides its draws, as run.json keeps it: ``meta`` (infer meta:
    meta-test and meta-validation scores, the learned scalars; no tensors, no loss
    history), ``np_eval`` (np_train: context and target log-likelihood per point on fresh
    tasks, by network) and ``train_loss`` (np_train: the final loss and the mean of the
    last 10% of steps, by network). Empty for the other methods."""
    out = {}
    meta = _json_small({k: v for k, v in (getattr(fit, "meta", None) or {}).items()
                        if k != "history"})
    if meta:
        out["meta"] = meta
    evals = _json_small(getattr(fit, "np_eval", None) or {})
    if evals:
        out["np_eval"] = evals
    losses = {k: [float(x) for x in v] for k, v in
              (getattr(fit, "train_loss", None) or {}).items() if len(v)}
    if losses:
        out["train_loss"] = {}
        for name, ls in losses.items():
            tail = ls[-max(1, len(ls) // 10):]
            out["train_loss"][name] = {"final": ls[-1], "steps": len(ls),
                                       "mean_last_10pct": sum(tail) / len(tail)}
    return out


def run_files(fit: Fit) -> list[str]:
    """The files :func:`write_run` writes for ``fit``, in the order it writes them."""
    return ["summary.csv", "samples.npz", *(["elbo.txt"] if fit.elbo else []), "run.json",
            "params.pt"]


def read_record(folder) -> dict:
    """The run.json record of a run folder (a RunFolderError when it is not one, or its
    run.json is not JSON, not an object, or lacks what a run of BDL's writes: ``model``
    and ``model_hash``; an ``infer`` that is not an object)."""
    folder = Path(folder)
    if not (folder / "samples.npz").exists() or not (folder / "run.json").exists():
        raise RunFolderError(f"{folder}: not a run folder (expected samples.npz and run.json "
                             "from 'bdl run' or fit.save)")
    where = folder / "run.json"
    try:
        record = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise RunFolderError(f"{where}: cannot be read as a run record ({e}); it is written "
                             "by 'bdl run' or fit.save") from None
    lacks = ["model", "model_hash"] if not isinstance(record, dict) else \
        [k for k in ("model", "model_hash") if not isinstance(record.get(k), str)]
    if lacks:
        what = "is not a JSON object" if not isinstance(record, dict) else \
            f"has no {' and no '.join(repr(k) for k in lacks)}"
        raise RunFolderError(f"{where} {what}: not the record of a run of bdl's ('bdl run' "
                             "or fit.save write one); re-run 'bdl run'")
    if not isinstance(record.get("infer", {}), dict):
        raise RunFolderError(f"{where}: its 'infer' is {type(record['infer']).__name__}, not "
                             "the object of the run's method and options; re-run 'bdl run'")
    return record


def read_run(folder) -> tuple[dict, dict, dict | None]:
    """(run.json record, draws {site: [chains, draws, ...]}, params or None). A samples.npz
    or params.pt that cannot be read, or draws that are not numbers, are a RunFolderError
    naming the file."""
    import torch

    from .data import DataError, read_data

    folder = Path(folder)
    run = read_record(folder)
    try:
        arrays = read_data(folder / "samples.npz")[0]
    except DataError as e:
        raise RunFolderError(f"{e}: the draws of a run are written by 'bdl run' or "
                             "fit.save") from None
    bad = [k for k, a in arrays.items() if a.dtype.kind not in "biuf"]
    if bad:
        raise RunFolderError(f"{folder / 'samples.npz'}: the draws of '{bad[0]}' are "
                             f"{arrays[bad[0]].dtype} values, not numbers")
    chains = {k: torch.as_tensor(a) for k, a in arrays.items()}
    params = None
    if (folder / "params.pt").exists():
        try:
            params = torch.load(folder / "params.pt", weights_only=True)
        except Exception as e:  # noqa: BLE001 - whatever torch meets in a damaged file
            raise RunFolderError(f"{folder / 'params.pt'}: cannot be read as the run's "
                                 f"fitted parameters ({type(e).__name__}: {e})") from None
        if not isinstance(params, dict) or not all(
                isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in params.items()):
            raise RunFolderError(f"{folder / 'params.pt'}: not the run's fitted parameters "
                                 "(a dict of name: tensor, as 'bdl run' writes)")
    return run, chains, params


def check_run(record: dict, chains: dict, folder, *, model: str, file: str, source: str,
              latents: list[str]) -> str | None:
    """The run must be of ``model`` (else a RunFolderError), and samples.npz must hold
    every site that run.json's ``sites`` lists (what the run saved) and, when the model
    file is the one the run fitted, every latent of the model (else a RunFolderError
    naming them: never prior draws in their place). A model file changed since the run
    gives the warning to show, which names the latents the run did not sample (they are
    drawn from their prior); None when the file is unchanged."""
    if record.get("model") not in (None, model):
        raise RunFolderError(f"{folder} is a run of model '{record.get('model')}' (from "
                             f"{record.get('file')}), not of '{model}'")
    saved = record.get("sites")
    gone = [n for n in saved if n not in chains] if isinstance(saved, list) else []
    if gone:
        raise RunFolderError(f"{Path(folder) / 'samples.npz'} has no draws of "
                             f"{', '.join(repr(n) for n in gone)}, which the run saved "
                             "(run.json's 'sites'): the file was changed or replaced; re-run "
                             "'bdl run'")
    unsampled = [n for n in latents if n not in chains]
    if unsampled and record.get("model_hash") == model_hash(source):
        raise RunFolderError(f"{Path(folder) / 'samples.npz'} has no draws of the latent"
                             f"{'s' if len(unsampled) > 1 else ''} "
                             f"{', '.join(repr(n) for n in unsampled)} of model '{model}', "
                             f"although {file} is the file the run fitted: the run's draws "
                             "were changed or replaced; re-run 'bdl run'")
    if record.get("model_hash") not in (None, model_hash(source)):
        return (f"{file} has changed since the run in {folder}"
                + (f"; its latents {', '.join(unsampled)} were not sampled there and "
                   "are drawn from their prior" if unsampled else ""))
    return None


def params_error(problems: list[str], folder, *, file: str, changed: bool) -> RunFolderError:
    """The error for a run whose saved params do not fit the model (``problems`` from
    :func:`ppl.infer.predict.params_problems`): predicting from fresh weights would be
    silently wrong."""
    why = (f"{file} has changed since the run in {folder}, and the run's fitted parameters "
           "do not fit it" if changed else
           f"the fitted parameters saved in {folder} do not fit this model and data")
    return RunFolderError(f"{why}: {'; '.join(problems)}. Predicting would start those "
                          "from fresh, untrained values; re-run 'bdl run' on "
                          f"{file} to fit the model as it is now")
