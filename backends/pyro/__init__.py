"""The Pyro backend: IR -> readable, standalone Pyro source."""

from .codegen import generate

__all__ = ["generate"]
