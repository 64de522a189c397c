"""Importing this package registers every lowering in ``tilefuse.frontend.lowering``."""

from . import (
    convolution,
    creation,
    embedding_backward,
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
    "embedding_backward",
    "indexing",
    "matmul",
    "pointwise",
    "pooling",
    "random",
    "reductions",
    "views",
]
