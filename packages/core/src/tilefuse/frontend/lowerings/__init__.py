"""Importing this package registers every lowering in ``tilefuse.frontend.lowering``."""

from . import (
    convolution,
    creation,
    indexing,
    matmul,
    pointwise,
    pooling,
    random,
    reductions,
    views,
)

__all__ = [
    "convolution",
    "creation",
    "indexing",
    "matmul",
    "pointwise",
    "pooling",
    "random",
    "reductions",
    "views",
]
