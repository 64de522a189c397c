"""Importing this package registers every lowering in ``tilefuse.frontend.lowering``."""

from . import creation, indexing, matmul, pointwise, reductions, views

__all__ = ["creation", "indexing", "matmul", "pointwise", "reductions", "views"]
