"""The master service: runs the masters and standalone servers a deployment defines."""

from palm.masters.service import MastersService

__all__ = ["MastersService"]
