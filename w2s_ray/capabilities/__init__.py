"""Capabilities by name: `registry.get("scan")`."""

from w2s_ray.capabilities import registry
from w2s_ray.capabilities.base import Capability, Example

__all__ = ["Capability", "Example", "registry"]
