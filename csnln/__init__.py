"""CSNLN: Cross-Scale Non-Local attention network for image super-resolution."""
from .model import CSNLN

__all__ = ["CSNLN"]
