"""The Pyro backend: IR -> readable, standalone Pyro source."""

from .codegen import generate, generate_mapped

__all__ = ["generate", "generate_mapped"]
