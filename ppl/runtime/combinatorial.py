"""Pyro's distributions over combinatorial objects and ``Empirical``, read as their values
come from a model.

``SpanningTree`` (a tree's V - 1 edges, each a pair of nodes), ``OneOneMatching`` and
``OneTwoMatching`` (the partner of each source) read their value as indices into their
logits, which torch wants integral. Observed data of BDL's ``int`` type reach a
distribution as the default float dtype when its table entry does not say otherwise
(``rt.real``), and a float index was torch's "tensors used as indices must be long" or
"scatter(): Expected dtype int32/int64 for index". Generated code calls ``rt.NAME``
(``signatures.LONG_VALUES``): Pyro's own class, which reads its value as integers.

``Empirical(samples, log_weights)`` scored only a value of exactly its own shape: in a
plate, or as a latent drawn there, the value has the plate's dims too and Pyro's
``log_prob`` refused it ("``value.shape`` must be torch.Size([])").
"""

from __future__ import annotations

import pyro.distributions as dist
import torch

from ppl.runtime.errors import ArgumentError
from ppl.runtime.mixtures import _shown


def _as_long(value):
    return value.long() if torch.is_tensor(value) and value.is_floating_point() else value


class SpanningTree(dist.SpanningTree):
    def __init__(self, edge_logits, sampler_options=None, validate_args=None):
        edges = edge_logits.shape[-1] if torch.is_tensor(edge_logits) else len(edge_logits)
        nodes = round((1 + (1 + 8 * edges) ** 0.5) / 2)
        if edges < 1 or nodes * (nodes - 1) // 2 != edges:
            # Pyro's bare AssertionError
            raise ValueError(f"SpanningTree's edge_logits has {edges} elements: it needs "
                             "one per pair of nodes, V (V - 1) / 2 for V nodes (1, 3, 6, "
                             "10, ...)")
        super().__init__(edge_logits, sampler_options, validate_args)

    def log_prob(self, value):
        value = _as_long(value)
        if self._validate_args:
            try:
                self.validate_edges(value)
            except ValueError:  # Pyro's "Edges are not sorted colexicographically: tensor"
                v = self.num_vertices
                raise ValueError(
                    f"SpanningTree's value {value.tolist()} is not a spanning tree of {v} "
                    f"nodes as Pyro writes one: {v - 1} edges [a, b] of nodes 0..{v - 1}, "
                    "a < b, sorted by b then by a, that join every node") from None
        return super().log_prob(value)


class OneOneMatching(dist.OneOneMatching):
    def __init__(self, logits, *, bp_iters=None, validate_args=None):
        if logits.dim() != 2 or logits.shape[0] != logits.shape[1]:
            # Pyro's bare AssertionError
            raise ArgumentError(f"OneOneMatching: 'logits' is {_shown(logits.shape)}, not "
                                "N x N (one row per source, one column per destination)",
                                "logits")
        super().__init__(logits, bp_iters=bp_iters, validate_args=validate_args)

    def log_prob(self, value):
        return super().log_prob(_as_long(value))


class OneTwoMatching(dist.OneTwoMatching):
    def __init__(self, logits, *, bp_iters=None, validate_args=None):
        if logits.dim() != 2 or logits.shape[0] != 2 * logits.shape[1]:
            # Pyro's bare AssertionError
            raise ArgumentError(f"OneTwoMatching: 'logits' is {_shown(logits.shape)}, not "
                                "2M x M (two sources per destination)", "logits")
        super().__init__(logits, bp_iters=bp_iters, validate_args=validate_args)

    def log_prob(self, value):
        return super().log_prob(_as_long(value))


class Empirical(dist.Empirical):
    """Pyro's Empirical, scoring a value with dims left of its batch (a plate's): the log
    of the total normalised weight of the samples equal to it, -inf where none is."""

    def log_prob(self, value):
        ev = len(self.event_shape)
        same = self._samples == value.unsqueeze(-ev - 1)
        if ev:
            same = same.flatten(-ev).all(-1)
        weights = self._log_weights - self._log_weights.logsumexp(-1, keepdim=True)
        return torch.where(same, weights, -torch.inf).logsumexp(-1)
