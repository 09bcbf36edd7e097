"""Pyro's hidden Markov models with their arguments' sizes checked first.

A size that does not fit (``transition_logits`` 2 x 3 for 2 states, an observation
distribution with 3 components for 2 states, a ``GaussianHMM`` matrix of the wrong
size) was torch's broadcast error or Pyro's bare ``AssertionError``; here it is an error
naming the arguments and their sizes, located at the argument by ``ppl.locate``. A chain
drawn without ``duration`` (a latent, or data left out) was Pyro's bare
``AssertionError`` too: it says to give ``duration=T``. Generated code calls these as
``rt.NAME`` (``ppl.check.signatures.SIZE_CHECKED``); each is Pyro's class.

``IndependentHMM(base_dist)`` is D chains of one observed coordinate each, the value
``[T, D]``: its base is an HMM whose batch ends in D and whose draws are ``[T, 1]``
(Pyro's bare ``AssertionError`` otherwise, here in words), and it draws through the
base's ``sample`` (Pyro's went through ``rsample``, which ``DiscreteHMM`` lacks: a
latent of it stopped with "DiscreteHMM.rsample is not implemented").
"""

from __future__ import annotations

import copy

import pyro.distributions as dist
import torch
from pyro.distributions.hmm import HiddenMarkovModel

from ppl.runtime.errors import ArgumentError
from ppl.runtime.functions import tensor
from ppl.runtime.mixtures import _shown


class _Drawn:
    """``sample`` of a chain of unknown length says so in words."""

    def sample(self, sample_shape=()):
        if self.duration is None:
            raise ValueError(
                f"{type(self).__name__} is drawn here (a latent, or data left out) and "
                "needs the sequence's length: give duration=T")
        return super().sample(torch.Size(sample_shape))


def with_duration(d, duration: int):
    """``d`` as a chain of ``duration`` steps where no parameter fixes its length (a
    homogeneous HMM: ``duration`` None, its event's time dim 1), for a value whose
    length the model declares (``shapes.event`` in a plate, which reads the event whole:
    its "event shape (1,) does not match (4,)" asked for ``duration=T``); ``d`` itself
    otherwise. An ``IndependentHMM``'s base gets the length too."""
    homogeneous = isinstance(d, dist.GaussianMRF) or getattr(d, "duration", 0) is None
    if not homogeneous or not d.event_shape or d.event_shape[0] != 1 or duration == 1:
        return d
    new = copy.copy(d)
    if isinstance(d, dist.IndependentHMM):
        new.base_dist = with_duration(d.base_dist, duration)
    elif not isinstance(d, dist.GaussianMRF):  # an MRF's density reads the value's length
        new._duration = int(duration)
    new._event_shape = torch.Size((int(duration),)) + d.event_shape[1:]
    return new


class _DiscreteHMM(_Drawn, dist.DiscreteHMM):
    pass


class _GaussianHMM(_Drawn, dist.GaussianHMM):
    pass


_DiscreteHMM.__name__ = _DiscreteHMM.__qualname__ = "DiscreteHMM"
_GaussianHMM.__name__ = _GaussianHMM.__qualname__ = "GaussianHMM"


def DiscreteHMM(initial_logits, transition_logits, observation_dist,  # noqa: N802
                validate_args=None, duration=None):
    """``pyro.distributions.DiscreteHMM``: ``initial_logits`` [S], ``transition_logits``
    [S, S] (or [T, S, S]), ``observation_dist`` with S as its last batch dim."""
    initial_logits, transition_logits = tensor(initial_logits), tensor(transition_logits)
    if initial_logits.dim() < 1:
        raise ArgumentError("DiscreteHMM: 'initial_logits' is a number, not one logit per "
                            "state", "initial_logits")
    s = initial_logits.shape[-1]
    if transition_logits.dim() < 2 or tuple(transition_logits.shape[-2:]) != (s, s):
        raise ArgumentError(
            f"DiscreteHMM: 'transition_logits' is {_shown(transition_logits.shape)} but "
            f"'initial_logits' has {s} states: it must end in {s} x {s} (from, to)",
            "transition_logits")
    batch = observation_dist.batch_shape
    if not batch or batch[-1] != s:
        raise ArgumentError(
            f"DiscreteHMM: 'observation_dist' has batch shape {_shown(batch)} but "
            f"'initial_logits' has {s} states: its last batch dim must be one per state "
            f"({s})", "observation_dist")
    out = _DiscreteHMM(initial_logits, transition_logits, observation_dist,
                       validate_args=validate_args, duration=duration)
    out._bare_time = _bare_time((("transition_logits", transition_logits.shape[:-2],
                                  transition_logits.shape),
                                 ("observation_dist", observation_dist.batch_shape[:-1],
                                  observation_dist.batch_shape)))
    return out


def GaussianHMM(initial_dist, transition_matrix, transition_dist,  # noqa: N802
                observation_matrix, observation_dist, validate_args=None, duration=None):
    """``pyro.distributions.GaussianHMM``: H hidden and O observed coordinates,
    ``transition_matrix`` H x H, ``observation_matrix`` H x O, each ``_dist`` a
    ``MultivariateNormal`` of H (initial, transition) or O (observation) coordinates."""
    transition_matrix, observation_matrix = tensor(transition_matrix), tensor(observation_matrix)
    for arg, d in (("initial_dist", initial_dist), ("transition_dist", transition_dist),
                   ("observation_dist", observation_dist)):
        if not isinstance(d, torch.distributions.MultivariateNormal):
            raise ArgumentError(f"GaussianHMM: '{arg}' is {type(d).__name__}; it must be a "
                                "MultivariateNormal", arg)
    if observation_matrix.dim() < 2:
        raise ArgumentError(f"GaussianHMM: 'observation_matrix' is "
                            f"{_shown(observation_matrix.shape)}, not an H x O matrix",
                            "observation_matrix")
    h, o = observation_matrix.shape[-2:]
    wants = (("initial_dist", initial_dist.event_shape, (h,), "draws"),
             ("transition_matrix", transition_matrix.shape[-2:], (h, h), "is"),
             ("transition_dist", transition_dist.event_shape, (h,), "draws"),
             ("observation_dist", observation_dist.event_shape, (o,), "draws"))
    for arg, got, want, verb in wants:
        if tuple(got) != want:
            raise ArgumentError(
                f"GaussianHMM: '{arg}' {verb} {_shown(got)} but 'observation_matrix' "
                f"{_shown((h, o))} has {h} hidden and {o} observed coordinates: it must be "
                f"{_shown(want)}", arg)
    out = _GaussianHMM(initial_dist, transition_matrix, transition_dist, observation_matrix,
                       observation_dist, validate_args=validate_args, duration=duration)
    out._bare_time = _bare_time((
        ("transition_matrix", transition_matrix.shape[:-2], transition_matrix.shape),
        ("transition_dist", transition_dist.batch_shape, transition_dist.batch_shape),
        ("observation_matrix", observation_matrix.shape[:-2], observation_matrix.shape),
        ("observation_dist", observation_dist.batch_shape, observation_dist.batch_shape)))
    return out


def _bare_time(args) -> tuple | None:
    """The first argument whose dims left of its own (a transition's S x S, an
    observation's states) are its time dim alone, of length above 1: ``(name, time
    length, shape)``. Pyro reads that dim as time, never as a batch of chains, so under
    ``IndependentHMM`` a ``[D, S, S]`` meant as one chain each is read as D time steps."""
    for name, time, shape in args:
        if len(time) == 1 and time[0] > 1:
            return name, int(time[0]), tuple(shape)
    return None


class LinearHMM(dist.LinearHMM):
    """Pyro's LinearHMM, whose missing log density is said in words (Pyro's
    NotImplementedError left the model unlocated)."""

    def log_prob(self, value):
        raise ValueError(
            "LinearHMM has no log density in Pyro, only draws (Pyro fits it through "
            "LinearHMMReparam, which BDL does not apply); with MultivariateNormal noises "
            "GaussianHMM is the same law, with a density")


def _timed(event) -> str:
    """An HMM's event with its time dim as T."""
    return "[" + ", ".join(["T"] + [str(n) for n in event[1:]]) + "]"


def steps_fit(d, steps: int) -> None:
    """Raise where the HMM ``d`` (or an ``IndependentHMM``) has parameters of a fixed
    number of time steps other than the value's ``steps``, in words: torch's was "event
    shape (3, 2) does not match (2, 2)"."""
    chains, t = isinstance(d, dist.IndependentHMM), getattr(d, "duration", None)
    if t is None or t == steps:
        return
    whose = "its chains' parameters" if chains else "its parameters"
    fix = ("the D chains' parameters of a homogeneous chain need a time dim of 1 there, "
           "transition [D, 1, S, S]" if chains else "a chain whose steps do not change "
           "with time has no time dim: transition [S, S]")
    raise ValueError(
        f"{type(d).__name__}: the value has {steps} time steps but {whose} have {t} "
        "(Pyro reads the dim left of a transition matrix, and the last batch dim of an "
        f"observation distribution before its states, as time: {fix})")


class _IndependentHMM(dist.IndependentHMM):
    """Draws through the base's ``sample`` (a ``DiscreteHMM`` has no ``rsample``), and a
    value whose length is not the chains' says so."""

    def sample(self, sample_shape=()):
        with torch.no_grad():
            base = self.base_dist.sample(torch.Size(sample_shape))
        return base.squeeze(-1).transpose(-1, -2)

    def log_prob(self, value):
        if value.dim() >= 2:
            steps_fit(self, value.shape[-2])
        return super().log_prob(value)


_IndependentHMM.__name__ = _IndependentHMM.__qualname__ = "IndependentHMM"


def IndependentHMM(base_dist):  # noqa: N802
    """``pyro.distributions.IndependentHMM``: ``base_dist`` an HMM of D chains (its last
    batch dim), each observing one coordinate (draws ``[T, 1]``); the value is ``[T, D]``."""
    if not isinstance(base_dist, HiddenMarkovModel):
        raise ArgumentError(f"IndependentHMM: 'base_dist' is {type(base_dist).__name__}; it "
                            "must be an HMM (DiscreteHMM, GaussianHMM, ...)", "base_dist")
    if not base_dist.batch_shape:
        raise ArgumentError(
            "IndependentHMM: 'base_dist' has no batch dims: its last batch dim must count "
            "the independent chains (D), e.g. DiscreteHMM's initial_logits [D, S]",
            "base_dist")
    name, event = type(base_dist).__name__, tuple(base_dist.event_shape)
    if len(event) != 2 or event[-1] != 1:
        raise ArgumentError(
            f"IndependentHMM: 'base_dist' draws {_timed(event)} per chain; each chain must "
            "draw [T, 1], one coordinate as a vector (an observation distribution whose "
            f"event is [1], a MultivariateNormal of 1 coordinate; {name}'s "
            "observation_dist of numbers draws [T])", "base_dist")
    bare = getattr(base_dist, "_bare_time", None)
    if bare is not None and bare[1] == base_dist.batch_shape[-1]:
        arg, d, shape = bare
        raise ArgumentError(
            f"IndependentHMM: the base's '{arg}' is {_shown(shape)}: Pyro reads its "
            f"leading {d} as {d} time steps shared by the chains, not as the {d} chains; "
            f"write {_shown((d, 1) + shape[1:])} for one homogeneous chain each, or "
            f"{_shown((1,) + shape)} for steps that change with time, shared by the chains",
            "base_dist")
    return _IndependentHMM(base_dist)
