"""The ``torch_dynamo_backends`` entry point: ``torch.compile(fn, backend="tilefuse")``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .. import config, plugin
from ..backend_selection import owner
from ..errors import NoBackendError

log = logging.getLogger("tilefuse")
_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning("tilefuse: %s", message)


def graph_device_types(example_inputs: Sequence[Any]) -> list[str]:
    """Device types of the tensor inputs, in first-seen order."""
    seen: list[str] = []
    for x in example_inputs:
        if isinstance(x, torch.Tensor) and x.device.type not in seen:
            seen.append(x.device.type)
    return seen or ["cpu"]


def tilefuse_backend(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> Callable:
    """Compile a Dynamo FX graph; on any device without a backend, run it eagerly.

    With ``TILEFUSE_STRICT=1`` a missing backend raises ``NoBackendError`` instead.
    """
    for device_type in graph_device_types(example_inputs):
        try:
            owner(device_type, plugin.CAP_POINTWISE)
        except NoBackendError as exc:
            if config.strict():
                raise
            _warn_once(f"{exc} Running this graph eagerly.")
            return gm.forward
    _warn_once("the compiler pipeline is not yet lowered to kernels; running this graph eagerly")
    return gm.forward
