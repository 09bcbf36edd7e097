"""The results of fitting a model: draws, summary, predictions."""

from __future__ import annotations

import pyro
import torch

from ..runtime.shapes import declared
from .draws import site_draws
from .methods import point_estimate
from .summary import Summary, summarise


class Fit:
    """Posterior draws of one fit.

    ``samples[name]`` has the draws first (chains concatenated); ``chains[name]`` keeps
    them apart as [chains, draws, ...], each site in its declared shape (:meth:`declare`).
    ``params`` holds the fitted ``pyro.param`` and network weights; ``elbo`` the ELBO
    trace for SVI/MAP.
    """

    def __init__(self, model, kwargs, *, chains, latents, deterministics):
        self.model = model
        self.kwargs = kwargs
        self.chains = chains
        self.latents = latents
        self.deterministics = deterministics
        self.param_state = pyro.get_param_store().get_state()
        self.params = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
        self.elbo: list[float] | None = None
        self.divergences = 0
        self.wall_time = 0.0
        self.method = ""
        self.options: dict = {}
        self.guide = None
        self.binder = None   # data dict -> model kwargs (set by ppl.Model)
        self.sites: dict = {}
        self.observed: list[str] = []  # observed data sites (set by ppl.Model)
        # finite-support latents summed out in the fit and drawn after it (ppl.infer.discrete)
        self.discrete: list[str] = []
        # sites of outer plates that Pyro lays out with unit dims (ppl.infer.draws.plate_layout)
        self.layout: dict[str, tuple] = {}

    def declare(self, layout: dict[str, tuple]) -> None:
        """Lay the draws out in their sites' declared shapes, as predictions will be:
        a latent ``m`` of plate N in plates N and M is [chains, draws, N], where the
        runners (Pyro) give [chains, draws, N, 1]. Every method's draws pass here
        (``ppl.infer.generated.fit_generated``); what goes back into the model is
        re-aligned by :func:`ppl.infer.draws.site_draws`."""
        self.layout = dict(layout)
        self.chains = declared(self.chains, self.layout, lead=2)

    def to_inference_data(self):
        """The draws as an ArviZ DataTree (needs the optional extra ``arviz``)."""
        from ..io.arviz import to_inference_data

        return to_inference_data(self)

    @property
    def samples(self) -> dict[str, torch.Tensor]:
        return {k: v.flatten(0, 1) for k, v in self.chains.items()}

    @property
    def num_draws(self) -> int:
        v = next(iter(self.chains.values()), None)
        return 0 if v is None else v.shape[0] * v.shape[1]

    def summary(self, sites: list[str] | None = None) -> Summary:
        names = sites or [k for k in self.latents + self.deterministics if k in self.chains]
        return summarise(self.chains, names,
                         point=point_estimate(self.method, self.options))

    def predict(self, data: dict | None = None, num_samples: int | None = None,
                sites: list[str] | None = None, seed: int | None = None
                ) -> dict[str, torch.Tensor]:
        """Posterior predictive: sample every site not fixed by ``data`` (optional data
        and data the model only observes left out, deterministic sites) once per
        posterior draw. ``seed`` makes the draws
        repeatable (as ``bdl predict --seed``) and leaves the global streams as they were;
        without it the draws continue the global streams."""
        from .rng import seeded

        with seeded(seed):
            return self._predict(data, num_samples, sites)

    def _predict(self, data, num_samples, sites) -> dict[str, torch.Tensor]:
        from ..runtime.functions import full_data

        kwargs = self.binder(data) if (self.binder is not None and data is not None) \
            else self.kwargs
        post = {k: v for k, v in self.samples.items() if k in self.latents}
        if num_samples is not None:
            post = {k: v[:num_samples] for k, v in post.items()}
        elif not post and self.discrete:
            num_samples = int(self.samples[self.discrete[0]].shape[0])
        elif not post and "samples" in self.options:
            # nothing latent: as many predictive draws as the method keeps
            num_samples = int(self.options["samples"])
        # labels alone were latent: no draw to condition on, and the labels are drawn
        # from their posterior given the data (an empty guide), not from their prior
        from .run import _nothing

        guide = _nothing if not post and self.discrete else None
        store = pyro.get_param_store()
        saved = store.get_state()
        store.set_state(self.param_state)
        try:
            # a subsampled plate predicts all its rows, not a random minibatch of them
            with full_data():
                if post and data is not None:
                    self._check_shapes(post, kwargs)
                # summed-out labels as the fit drew them (labels=sample or map)
                return declared(site_draws(self.model, kwargs, posterior=post or None,
                                           guide=guide, num_samples=num_samples, sites=sites,
                                           labels=self.options.get("labels", "sample")),
                                self.layout, lead=1)
        finally:
            store.set_state(saved)

    def _check_shapes(self, post: dict, kwargs: dict) -> None:
        """A :class:`BdlError` when new data change the shape of a latent the draws hold
        (another ``J``): in the fit's words, not torch's broadcasting message."""
        from ..syntax.diagnostics import BdlError, Diagnostic
        from .draws import at_values
        from .predict import shape_problems

        # at the first draw, not a prior one that a support following a latent may refuse
        first = at_values({k: v[0] for k, v in post.items()})
        with torch.random.fork_rng(devices=[]):
            trace = pyro.poutine.trace(first(self.model)).get_trace(**kwargs)
        problems = shape_problems(post, trace, lead=1)
        if problems:
            raise BdlError([Diagnostic(
                f"fit.predict: the new data do not fit the posterior draws: {p}",
                notes=["a latent's shape comes from the data's sizes: predict with data "
                       "of the sizes the model was fitted with"]) for p in problems],
                "predict")
