"""Seeded draws that leave the caller's random streams as they were."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import pyro
import torch


@contextlib.contextmanager
def seeded(seed: int | None):
    """Inside, torch, numpy and ``random`` draw from ``seed`` (``pyro.set_rng_seed``);
    afterwards every stream is back where it was, so a seeded ``predict`` does not reset
    the user's global stream. ``None``: the global streams, untouched and advancing."""
    if seed is None:
        yield
        return
    py_state, np_state = random.getstate(), np.random.get_state()
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        pyro.set_rng_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
