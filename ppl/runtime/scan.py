"""``scan(f, init, xs)``: a recursion over the first dimension of ``xs`` (the builtin's
runtime; docs/language.md, "Recursions").

    out[0] = init,    out[t + 1] = f(out[t], xs[t])    for t = 0 .. T - 1

The value is every carry, the initial one first: ``[T + 1, ...carry]`` for ``xs`` of
``[T, ...]`` (jax.lax.scan's stacked carries with ``init`` in front). A GARCH variance
``sigma2[t] = a0 + a1 * r[t - 1]^2 + b1 * sigma2[t - 1]`` with ``sigma2[0] = s0`` is then
``scan(f, s0, r[:-1])``, one value per observation; the last row is the final carry (an
HMM's forward variable at the last time).

A Python loop of torch ops: each step is differentiable, nothing is written in place, and
the carries are stacked once at the end. A number given as ``init`` takes the dtype and
device of ``xs`` (a one-number tensor on another device moves to xs's); a body whose value
has fewer dimensions than the carry (a number for a vector carry) is broadcast to the
carry's shape at that step, before the next step reads it (``sum(c) + r`` of a [2] carry
is the [2] of that sum), and carries of mixed dtypes are promoted by the stacking.

A body that reads a discrete label summed out (``where(z > 0.5, r, 0.0)``, ``mu[z]``)
gives values with the label's enumeration dims left of the carry's own (init's) dims,
``[2, 1]`` for a number carry: each step broadcasts the carry to them (one recursion per
enumerated value) and the carries are stacked between them and the own dims,
``[2, 1, T + 1]``, the layout of a label's value (docs "Discrete latents"). ``init`` and
``xs`` never carry such dims (the checker refuses them reading a label), so init's dims
are the carry's own.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .errors import ArgumentError
from .functions import tensor


def scan(f: Callable, init, xs) -> torch.Tensor:
    """The carries ``[init, f(init, xs[0]), f(f(init, xs[0]), xs[1]), ...]`` stacked along
    a new dimension left of the carry's own (init's) dims: ``[len(xs) + 1, ...carry]``,
    or ``[...batch, len(xs) + 1, ...carry]`` where the body adds batch dims on the left
    (a label summed out, ``[K, 1]``: one recursion per enumerated value)."""
    xs = tensor(xs)
    if xs.dim() == 0:
        raise ArgumentError("scan runs over the first dimension of xs, but xs is a single "
                            "number: give a sequence [T, ...]", "xs")
    if not callable(f):
        raise ArgumentError("scan's f must be a function (carry, x) => new_carry", "f")
    carry = init if isinstance(init, torch.Tensor) else torch.as_tensor(
        init, dtype=xs.dtype if xs.is_floating_point() else torch.get_default_dtype(),
        device=xs.device)
    if carry.dim() == 0 and carry.device != xs.device:  # a number made a tensor elsewhere
        carry = carry.to(xs.device)
    own = carry.dim()  # the carry's own dims; a step may add batch dims on their left
    carries = [carry]
    for x in xs.unbind(0):
        step = f(carry, x)
        step = step if isinstance(step, torch.Tensor) else torch.as_tensor(
            step, dtype=carry.dtype, device=carry.device)
        carry = step.expand(torch.broadcast_shapes(step.shape, carry.shape))
        carries.append(carry)
    return torch.stack(torch.broadcast_tensors(*carries), dim=-own - 1)
