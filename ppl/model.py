"""``ppl.compile`` / ``ppl.load`` and the :class:`Model` they return."""

from __future__ import annotations

import builtins
import linecache
import numbers
import os
from collections.abc import Mapping
from pathlib import Path

from . import locate
from .infer.methods import number_text, point_estimate, seed_problem
from .pipeline import Compiled, compile_source
from .syntax.diagnostics import BdlError, Diagnostic, Span


class Model:
    """A compiled BDL model: its generated Pyro source, the Pyro callable, and ``fit``."""

    def __init__(self, compiled: Compiled, name: str | None = None):
        models = compiled.checked.models
        if name is not None and name not in models:
            raise BdlError([Diagnostic(f"no model named '{name}' in this file (it has: "
                                       f"{', '.join(models)})", Span(0, 0))],
                           compiled.filename, compiled.text)
        self.compiled = compiled
        self.name = name or list(models)[-1]
        self.checked = models[self.name]
        self.ir = compiled.ir[self.name]
        self.source = compiled.python
        self.bdl_source = compiled.text
        self.filename = compiled.filename
        self.warnings = compiled.checked.warnings
        self.namespace, self._pseudo = _execute(compiled, self.name)
        self.pyro_model = self.namespace[self.name]
        self.signature = self.namespace[f"{self.name.upper()}_SIGNATURE"]
        # the IR's options: the generated module's, plus the compile-site data that
        # Option.resolve hooks recorded (ppl.infer.methods.without_site)
        self.infer = self.ir.infer
        self._transformed = self.namespace.get(f"{self.name}_transformed_data")
        # the guide block's function (docs/language.md, "Guides"); None without one
        self.pyro_guide = (self.namespace[self.ir.guide.name] if self.ir.guide is not None
                           else None)

    def __repr__(self) -> str:
        return f"<ppl.Model {self.name} from {self.filename}>"

    # ---- data ----
    def bind(self, data: dict, may_omit: frozenset[str] = frozenset(),
             drawn: dict | None = None, where: str = "bind") -> dict:
        """Data -> the keyword arguments of :attr:`pyro_model` (sizes, transformed data);
        ``may_omit``: required arguments that may be missing; ``drawn`` (a fit's:
        ``CheckedModel.drawn()``): a data key naming a latent is an error at its ``~``
        (``ppl.runtime.data.bind``); ``where`` names the caller in a wrong-type error."""
        from .runtime import bind

        check_data(data, where)
        kwargs = bind(self.signature, data or {}, source_text=self.bdl_source,
                      may_omit=may_omit, drawn=drawn)
        if self._transformed is not None:
            kwargs.update(self._transformed(**kwargs))
        return kwargs

    # ---- inference ----
    def resolve_infer(self, infer: str | None = None, *, flags: dict | None = None,
                      **options) -> tuple[str, dict]:
        """Method and options: the file's infer line, then ``infer``, then ``options``
        (one given in both ``infer`` and ``options`` with different values is an error;
        ``flags``: how the caller spells ``options``, :func:`merge_infer`)."""
        method, opts = merge_infer(self.infer, infer, guide_block=self.ir.guide is not None,
                                   model=self.name, flags=flags, **options)
        refuse_unfittable(self.checked, method, self.filename, self.bdl_source)
        return method, opts

    def fit(self, data: dict | None = None, infer: str | None = None, *,
            progress: bool = False, **options):
        """Fit with NUTS/HMC/SVI/MAP; returns a :class:`ppl.infer.fit.Fit`. An error raised
        while a model statement runs is a located :class:`BdlError` (``ppl.locate``)."""
        check_data(data, "fit")
        check_type(infer, (str, type(None)), "fit", "infer",
                   "a str such as 'svi(steps=500)', or None")
        with locate.located(self._pseudo):
            return self._fit(data, infer, progress=progress, **options)

    def _fit(self, data: dict | None, infer: str | None, *, progress: bool, **options):
        from .infer import custom_guide
        from .infer.generated import fit_generated, missing_optional
        from .infer.run import torch_defaults

        method, opts = self.resolve_infer(infer, **options)
        with torch_defaults(opts["device"], opts["dtype"]):
            kwargs = self.bind(data or {}, drawn=self.checked.drawn())
            refuse_infinite(kwargs, self.ir.observed, self.signature, self.filename,
                            self.bdl_source)
            # a fresh start before the model first runs (below, or in the runner)
            import pyro

            from .runtime import reset_networks

            pyro.clear_param_store()
            reset_networks()
            pyro.set_rng_seed(opts["seed"])
            with custom_guide.using(self.pyro_guide):
                result = fit_generated(self.pyro_model, kwargs, method, opts,
                                       missing_optional(self.ir.args, kwargs),
                                       progress=progress)
            result.observed = list(self.ir.observed)
        device, dtype = opts["device"], opts["dtype"]

        def binder(d):
            # as `bdl predict`: data the model only observes may be left out (drawn)
            with torch_defaults(device, dtype):
                return self.bind(d, may_omit=self.checked.observed_only, where="predict")

        result.binder = binder
        _predict = result.predict

        def predict(d=None, num_samples=None, sites=None, seed=None):
            check_seed(seed, "predict")
            with locate.located(self._pseudo), torch_defaults(device, dtype):
                return _predict(d, num_samples, sites, seed)

        result.predict = predict

        def save(path, force: bool = False) -> None:
            """Write the run folder ``bdl run --out`` writes (``ppl.io.run_folder``); the
            data, given as arrays, are hashed as the model was given them (bound:
            ``data_hash_kind`` ``"arrays"``)."""
            from .io.run_folder import (
                RunFolderError,
                check_creatable,
                check_folder,
                write_run,
            )

            check_type(path, (str, os.PathLike), "fit.save", "path", "a str or a Path")
            what = "fit.save's path"
            try:
                check_folder(Path(path), what)
            except RunFolderError as e:
                raise FileExistsError(str(e)) from None
            try:
                check_creatable(Path(path), what)
            except RunFolderError as e:
                raise OSError(str(e)) from None
            try:
                write_run(Path(path), result, model=self.name, file=self.filename,
                          source=self.bdl_source, data_values=kwargs, force=force)
            except RunFolderError as e:
                raise FileExistsError(str(e)) from None

        result.save = save
        return result

    def predict_run(self, run, data: dict | None = None, seed: int | None = None,
                    draws: int | None = None) -> dict:
        """Posterior predictive draws from a saved run folder (``bdl run --out`` or
        ``fit.save``); ``bdl predict`` is this. One draw of every site not fixed by
        ``data`` per saved posterior draw (``draws``: that many of them, evenly spaced),
        with the run's fitted params and network weights; a point estimate (a ``map`` run,
        ``svi(guide=delta)``) or a run with nothing latent saved gives ``draws`` (default
        1000) draws of the predictive at the saved point. Data the model only observes may
        be left out (they are drawn). A run of another model is a ``RunFolderError``; a
        model changed since the run, a warning naming the latents drawn from their prior,
        unless a param or network weight it needs was not saved by the run or has another
        shape there (a renamed network, a changed size or option): that is a
        ``RunFolderError``. New data that change a saved latent's shape (another ``D``)
        are a ``RunFolderError`` naming the saved shape and the one the data give."""
        import warnings

        from .infer.predict import (
            DrawShapeMismatch,
            ParamsMismatch,
            point_draws,
            posterior_predictive,
            thinned,
        )
        from .io.run_folder import RunFolderError, check_run, params_error, read_run

        check_seed(seed, "predict")
        if draws is not None and (isinstance(draws, bool) or not isinstance(draws, int)
                                  or draws < 1):
            raise BdlError([Diagnostic(f"draws={draws!r}: expected a positive integer")],
                           "draws")
        record, chains, params = read_run(run)
        changed = check_run(record, chains, run, model=self.name, file=self.filename,
                            source=self.bdl_source, latents=list(self.ir.latents))
        opts = record.get("infer", {})
        if chains and point_estimate(opts.get("method"), opts):
            chains = point_draws(chains, draws or 1000)  # every saved draw is the estimate
        elif chains and draws is not None:
            saved = max(v.shape[0] * v.shape[1] for v in chains.values())
            if draws > saved:
                warnings.warn(f"draws={draws}: the run in {run} saved {saved} posterior "
                              f"draws; all {saved} are used", stacklevel=2)
            chains = thinned(chains, draws)
        try:
            with locate.located(self._pseudo):
                pred = posterior_predictive(self, chains, data or {}, params,
                                            device=opts.get("device", "cpu"),
                                            dtype=opts.get("dtype", "float64"), seed=seed,
                                            num_samples=draws,
                                            labels=opts.get("labels", "sample"))
        except ParamsMismatch as e:
            raise params_error(e.problems, run, file=self.filename,
                               changed=changed is not None) from None
        except DrawShapeMismatch as e:
            raise RunFolderError(
                f"the new data do not fit the draws saved in {run}: {'; '.join(e.problems)}. "
                "A latent's shape comes from the data's sizes: predict with data of the "
                "sizes the run was fitted with, or re-run 'bdl run'") from None
        if changed:
            warnings.warn(changed, stacklevel=2)
        return pred

    def sample_prior(self, data: dict | None = None, num_samples: int = 1000, seed: int = 0,
                     dtype: str = "float64", device: str = "cpu") -> dict:
        """Prior and prior-predictive draws, ``[num_samples, ...declared shape]`` per site.

        Every sample site is drawn from the prior, observed ones included (``y`` is a
        simulated data set, not the data; :class:`ppl.infer.draws.simulate_observed`),
        with subsampled plates over all their data; deterministic sites come with them.
        The data still fix the sizes and the covariates. Data that the model only observes
        (``y ~ ...``, never read in an expression) may be left out, as in Stan's prior
        predictive; a size that then has no data to bind it is given as a key
        (``{"N": 20}``).
        """
        import pyro

        from .infer.draws import simulate_observed, site_draws, site_layout
        from .infer.run import torch_defaults
        from .runtime import reset_networks
        from .runtime.functions import full_data
        from .runtime.shapes import declared

        check_seed(seed, "sample_prior")
        check_draw_options("sample_prior", num_samples=num_samples, dtype=dtype,
                           device=device)
        pyro.set_rng_seed(seed)
        pyro.clear_param_store()
        reset_networks()
        with locate.located(self._pseudo), torch_defaults(device, dtype), full_data():
            kwargs = self.bind(data or {}, may_omit=self.checked.observed_only,
                               where="sample_prior")
            model = simulate_observed()(self.pyro_model)
            out = site_draws(model, kwargs, num_samples=num_samples)
            # every site in its declared layout (a simulated g: real[N] passes in as data)
            out = declared(out, site_layout(model, kwargs), lead=1)
        return {k: v.detach() for k, v in out.items()}

    def log_density(self, trace_values: dict, data: dict) -> float:
        """log p(values, data): the joint log density at one full assignment of the latent
        sites, over all the data (plates are not subsampled).

        ``trace_values`` maps every latent site's name to its value (a tensor, a number or
        a nested list); a missing latent or a name that is not a latent is an error, so the
        result depends on its inputs only. Optional data left out of ``data`` are
        generated quantities (as in a fit) and are not part of the density.

        The density is in the latents' own (constrained) parametrisation, no log-Jacobian,
        also for a latent whose support follows others (``z ~ Uniform(a, a + 1)``): it
        takes ``z`` in its support, not its hidden draw on the real line.
        """
        import pyro
        import torch

        from .infer.draws import at_values
        from .infer.generated import held_out, missing_optional
        from .infer.rng import seeded
        from .infer.run import _hidden_sites
        from .runtime.dependent_support import SUFFIX, as_plain_sites
        from .runtime.functions import full_data
        from .runtime.shapes import site_shaped

        check_type(trace_values, Mapping, "log_density", "trace_values",
                   "a dict of latent name: value")
        check_data(data, "log_density")
        # the first trace names the sites, each latent at its given value as soon as it
        # is drawn (at_values), so a site whose parameters or support read a latent is
        # built from the values given, never from a prior draw that may fall outside its
        # support; only a latent not given is drawn, with a fixed seed inside seeded()
        # (the caller's random streams stay where they were). A latent whose support
        # follows others is a plain site there, read at its value
        with locate.located(self._pseudo), full_data(), seeded(0), as_plain_sites():
            kwargs = self.bind(data)
            reached: dict = {}
            try:
                model, held = held_out(at_values(trace_values, reached)(self.pyro_model),
                                       kwargs, missing_optional(self.ir.args, kwargs))
                prior = pyro.poutine.trace(model).get_trace(**kwargs)
            except (ValueError, RuntimeError, IndexError, ZeroDivisionError):
                # the model stopped at a site built from a latent drawn (not given) or
                # given a value that does not fit: that is the error to show
                unset = [f"'{k}' does not fit the latent, {list(shape)} with these data"
                         if k in trace_values else f"missing value for latent '{k}'"
                         for k, shape in reached.items() if shape is not None]
                if unset:
                    raise BdlError([Diagnostic(f"log_density: {p}") for p in unset],
                                   self.filename, self.bdl_source) from None
                raise
            latents, dets = _hidden_sites(model, kwargs, prior)
            problems = [f"'{k}' is optional data left out: pass it in data" for k in held
                        if k in trace_values]
            problems += [f"'{k}' is computed from the latents, not one of them" for k in dets
                         if k in trace_values]
            real_line = {k for k in trace_values
                         if k.endswith(SUFFIX) and k[: -len(SUFFIX)] in latents}
            problems += [f"'{k}' is the hidden draw of '{k[: -len(SUFFIX)]}' on the real "
                         f"line: pass '{k[: -len(SUFFIX)]}' itself, a value in its support"
                         for k in sorted(real_line)]
            problems += [f"'{k}' is not a latent site" for k in trace_values
                         if k not in latents and k not in held and k not in dets
                         and k not in real_line]
            problems += [f"missing value for latent '{k}'" for k in latents
                         if k not in trace_values]
            if problems:
                raise BdlError([Diagnostic(
                    f"log_density: {p}", notes=[
                        f"the latent sites are: {', '.join(latents) or '(none)'}"])
                    for p in problems], self.filename, self.bdl_source)
            values, bad = {}, []
            for k, v in trace_values.items():
                site = prior.nodes[k]["value"]
                if not torch.is_tensor(v):
                    # the site's own dtype: a Bernoulli label is a float 0/1, a
                    # Categorical one a long
                    try:
                        v = torch.as_tensor(v, dtype=site.dtype)
                    except (TypeError, ValueError, RuntimeError):
                        bad.append(f"'{k}' is {v!r}: expected a number, a tensor or a "
                                   "nested list of numbers")
                        continue
                # a latent of an outer plate is laid out [N, 1] (Pyro's dims): given as
                # declared ([N]), it is the same numbers
                values[k] = site_shaped(v, site.shape)
                if [n for n in values[k].shape if n != 1] != [n for n in site.shape if n != 1]:
                    bad.append(f"'{k}' is {_dims(v.shape)} but the latent is "
                               f"{_dims(site.shape)} with these data")
            if bad:
                raise BdlError([Diagnostic(f"log_density: {b}") for b in bad], self.filename,
                               self.bdl_source)
            conditioned = pyro.poutine.condition(model, data=values)
            tr = pyro.poutine.trace(conditioned).get_trace(**kwargs)
            outside = [_outside_declared(k, tr.nodes[k]["fn"], values[k]) for k in values
                       if k in tr.nodes]
            outside = [o for o in outside if o]
            if outside:  # a declared set the samplers never leave (Restricted is unvalidated)
                raise BdlError([Diagnostic(f"log_density: {o}") for o in outside],
                               self.filename, self.bdl_source)
            return float(tr.log_prob_sum())


def _outside_declared(name: str, fn, value) -> str | None:
    """Why ``value`` of latent ``name`` lies outside the declared set of its site ``fn``
    (``c: ordered[3]`` at [2, 1, 3], ``s: real<lower=0>`` at -1), or None: such a site
    (``rt.Restricted``) is not validated by torch, so its density would be finite there."""
    from .runtime import Restricted

    if not isinstance(fn, Restricted) or fn._empty is not None:
        return None  # a set that bounds following latents left empty: density 0 there
    ok = fn.support.check(value)
    if bool(ok.all()):
        return None
    words, _ = locate.support_words(fn.support)
    return f"'{name}' is {number_text(value.detach())}, outside its declared set ({words})"


def check_type(value, types, where: str, name: str, expected: str) -> None:
    """The API's one rule for its arguments: an argument of the wrong Python type (the
    source text, the data dict and its keys, the infer spec, a path) is a ``TypeError``
    naming it and the type expected; a value of the right type that is wrong (an option
    out of range, data that do not fit the model) is a :class:`BdlError`."""
    if not isinstance(value, types):
        raise TypeError(f"{where}: {name} must be {expected}, not {type(value).__name__}")


def check_data(data, where: str = "data") -> None:
    """``data`` is None or a dict (any mapping) whose keys are str (a ``TypeError``)."""
    check_type(data, (Mapping, type(None)), where, "data", "a dict of name: value")
    keys = [k for k in (data or {}) if not isinstance(k, str)]
    if keys:
        raise TypeError(f"{where}: data keys must be str (the model's argument names), not "
                        f"{type(keys[0]).__name__} ({keys[0]!r})")


def check_draw_options(where: str, *, num_samples, dtype: str, device: str) -> None:
    """``num_samples`` a positive integer, ``dtype`` and ``device`` as a fit takes them
    (float32 or float64; cpu or cuda): else a :class:`BdlError` rendered ``WHERE: ...``."""
    problems = []
    if isinstance(num_samples, bool) or not isinstance(num_samples, numbers.Integral) \
            or num_samples < 1:
        problems.append(f"num_samples={num_samples!r}: expected a positive integer")
    if dtype not in ("float32", "float64"):
        problems.append(f"dtype={dtype!r}: expected one of float32, float64 (as fit takes "
                        "it)")
    if device not in ("cpu", "cuda"):
        problems.append(f"device={device!r}: expected one of cpu, cuda")
    if problems:
        raise BdlError([Diagnostic(p) for p in problems], where)


def refuse_infinite(kwargs: dict, observed, signature, filename: str,
                    text: str | None) -> None:
    """Observed data holding inf (JSON ``Infinity``, CSV ``inf``) are a :class:`BdlError`
    at the argument's declaration, in the words of a NaN there ("'y' element 0 is inf"),
    before a fit that could only fail to start. Data that are not observed (a bound, a
    scale) may be inf."""
    import torch

    errs = []
    for spec in signature.args:
        v = kwargs.get(spec.name)
        if spec.name not in observed or not torch.is_tensor(v) \
                or not v.is_floating_point() or not bool(torch.isinf(v).any()):
            continue
        at = torch.isinf(v).nonzero()[0].tolist()
        where = f" element {at[0] if len(at) == 1 else at}" if at else ""
        errs.append(Diagnostic(f"'{spec.name}'{where} is {float(v[tuple(at)]):g}; observed "
                               "data are finite numbers", Span(spec.line, spec.col)
                               if spec.line else Span(0, 0)))
    if errs:
        raise BdlError(errs, filename, text)


def _dims(shape) -> str:
    return "[" + ", ".join(str(int(n)) for n in shape) + "]"


def check_seed(seed, where: str) -> None:
    """A draw's seed is None (the global streams) or an integer in 0..SEED_MAX: else a
    :class:`BdlError` rendered ``WHERE: error: ...``, not numpy's ValueError at the first
    draw. (A fit's seed is checked with its options, ``ppl.infer.run.resolve_options``.)"""
    why = seed_problem(seed) if seed is not None else None
    if why:
        raise BdlError([Diagnostic(f"seed={seed!r} is out of range: {why}")], where)


def refuse_unfittable(checked, method: str, filename: str, text: str | None) -> None:
    """The refusals a fit makes between checking the model and running it, as a
    :class:`BdlError` located in the BDL file ``filename`` (``text``): a method that a
    construct of the checked model ``checked`` cannot be fitted by, or that needs a
    construct it does not use (``method_mismatch``), and a statement that no method can fit
    (``CheckedModel.fit_errors``, a warning at check). ``bdl run``, the API and a generated
    module run on its own (``ppl.runtime.main``) all refuse here."""
    from .check.method_fit import method_mismatch

    errs = method_mismatch(method, checked.model, Span(0, 0)) + list(checked.fit_errors)
    if errs:
        raise BdlError(errs, filename, text)


def merge_infer(base: dict | None, infer: str | None = None, *, guide_block: bool = False,
                model: str | None = None, flags: dict | None = None,
                **options) -> tuple[str, dict]:
    """Method and validated options: ``base`` (a file's infer settings, ``{"method": ...,
    option: value}``; None: nuts), then the spec ``infer`` (``"svi(steps=100)"``; another
    method than base's drops base's options), then ``options``. ``bdl run``, the API and a
    generated module run on its own (``--infer``, ``--seed``) all resolve them here. The
    spec is held to the rules of a file's infer line (an option given twice, a value out
    of its range), its errors located in it (``--infer:1:12``). ``guide_block``: the
    model (named ``model``) has a guide block, which svi then fits with unless an
    autoguide is asked for (``ppl.infer.custom_guide.choose_guide``). An option that
    ``infer`` and ``options`` both give, with different values, is an error located in the
    spec that names both (``flags``: how the caller spells each of ``options``, ``--seed``;
    else ``seed=``); the same value twice is fine."""
    from .check.checker import validate_options
    from .infer.methods import lookup
    from .infer.run import resolve_options

    base = dict(base or {"method": "nuts"})
    method = base.pop("method")
    given: dict = {}
    spans: dict = {}  # option -> its span in the spec
    shown = None
    if infer is not None:
        m, spec_given, shown, span = _spec_options(infer)
        values, errs = validate_options(m, spec_given, span)
        if errs:
            raise BdlError(errs, "--infer", shown)
        if m != method:
            base = {}
        method = m
        given.update(values)
        spans = {k: s for k, _, s in spec_given}
        twice = [Diagnostic(
            f"option '{k}' is {_shown(values[k])} here but {(flags or {}).get(k, f'{k}=')} "
            f"gives {_shown(options[k])}: give it once, or the same value in both",
            spans[k]) for k in options if k in values and not _same(values[k], options[k])]
        if twice:
            raise BdlError(twice, "--infer", shown)
    given.update(options)
    values, errs = validate_options(
        method, [(k, v, Span(0, 0)) for k, v in given.items()], Span(0, 0))
    if errs:
        raise BdlError(errs, "infer")
    spec = lookup(method)
    merged = {k: o.default for k, o in spec.options.items()} | base | values
    located = [Diagnostic(f"option '{k}' of {method}: {p}", spans[k])
               for k, p in spec.problems(merged) if k in spans and k not in options]
    if located:  # a range the spec broke: there (the rest as resolve_options says it)
        raise BdlError(located, "--infer", shown)
    opts = resolve_options(method, {**base, **values})
    from .infer.custom_guide import choose_guide

    try:
        opts = choose_guide(method, opts, "guide" in base or "guide" in values, model,
                            guide_block)
    except BdlError as e:
        if "guide" in spans and "guide" not in options:  # guide=custom in the spec: there
            raise BdlError([Diagnostic(d.message, spans["guide"], notes=d.notes)
                            for d in e.diagnostics], "--infer", shown) from None
        raise
    if opts.get("device") == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise BdlError([Diagnostic(
                "device=cuda was asked for, but CUDA is not available here "
                "(torch.cuda.is_available() is False)",
                notes=["use device=cpu (the default), or a torch built with CUDA on a "
                       "machine with a GPU"])], "infer")
    return method, opts


def _same(a, b) -> bool:
    """Whether two values of one option are the same (1 and 1.0 are; True and 1 not)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - values that do not compare (tensors): not the same
        return a is b


def _shown(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_infer_spec(spec: str) -> tuple[str, dict]:
    """``"svi(steps=500, lr=0.01)"`` or ``"svi"`` -> ("svi", {...})."""
    method, given, _, _ = _spec_options(spec)
    return method, {k: v for k, v, _ in given}


def _spec_options(spec: str) -> tuple[str, list, str, Span]:
    """(method, [(option, value, span)] as written, the text the spans point into
    (``infer METHOD(...)``), the method's span): a spec parsed as a file's infer line is,
    so an empty one says what it lacks as that line does."""
    from .check.checker import option_value
    from .syntax.parser import parse

    text = spec.strip()
    if text and "(" not in text:
        text += "()"
    shown = "infer " + text
    program = parse(shown, "--infer")
    if len(program.infers) != 1 or program.models:
        raise BdlError([Diagnostic("expected METHOD(option=value, ...)", Span(1, 1))],
                       "--infer", shown)
    inf = program.infers[0]
    if inf.args:
        raise BdlError([Diagnostic("infer options are keywords: name=value",
                                   inf.args[0].span)], "--infer", shown)
    given = []
    for kw in inf.options:
        span = kw.span
        if kw.value.span.end_line == span.line and kw.value.span.end_col:
            span = Span(span.line, span.col, span.line, kw.value.span.end_col)
        try:
            given.append((kw.name, option_value(kw.value), span))
        except ValueError as e:
            raise BdlError([Diagnostic(str(e), kw.span)], "--infer", shown) from None
    return inf.method, given, shown, inf.span


_counter = [0]


def _execute(compiled: Compiled, name: str) -> tuple[dict, str]:
    """Execute generated source; register it with linecache so tracebacks show it, and
    with its source map so run-time errors point at the BDL statement (``ppl.locate``)."""
    python = compiled.python
    _counter[0] += 1
    pseudo = f"<bdl-generated:{Path(compiled.filename).name}:{_counter[0]}>"
    linecache.cache[pseudo] = (len(python), None, python.splitlines(True), pseudo)
    locate.register(pseudo, compiled.filename, compiled.text, compiled.source_map,
                    compiled.checked.models[name].model)
    ns: dict = {"__name__": f"ppl_generated_{name}"}
    exec(builtins.compile(python, pseudo, "exec"), ns)
    return ns, pseudo


def compile(text: str, filename: str = "<string>", model: str | None = None) -> Model:  # noqa: A001
    """Compile BDL source text; the last model of the text unless ``model`` is given."""
    check_type(text, str, "ppl.compile", "text", "a str (the BDL source)")
    check_type(filename, str, "ppl.compile", "filename", "a str")
    check_type(model, (str, type(None)), "ppl.compile", "model", "a model name (str) or None")
    return Model(compile_source(text, filename), model)


def load(path: str | Path, model: str | None = None) -> Model:
    """Compile a ``.bdl`` file (a missing file or a folder is a :class:`BdlError`)."""
    check_type(path, (str, os.PathLike), "ppl.load", "path", "a str or a Path")
    p = Path(path)
    if not p.is_file():
        what = "is a directory" if p.is_dir() else "no such file"
        raise BdlError([Diagnostic(f"{what} (expected a .bdl file)")], str(p))
    return compile(p.read_text(), str(p), model)
