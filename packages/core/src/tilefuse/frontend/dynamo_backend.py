"""The ``torch_dynamo_backends`` entry point: ``torch.compile(fn, backend="tilefuse")``.

Flow: check that every device has a backend (else run eagerly, one warning);
AOTAutograd with tilefuse's decomposition table splits forward and backward;
each half is compiled by ``tilefuse.codegen.compile_graph``. A graph that cannot
be compiled runs eagerly with one warning naming the error, never a crash
(``TILEFUSE_STRICT=1`` raises instead). Graphs with symbolic sizes are
specialized: compiled once per distinct concrete input signature.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch._dynamo.backends.common import aot_autograd
from torch._functorch.aot_autograd import make_boxed_func

from .. import config, plugin
from ..backend_selection import owner
from ..errors import NoBackendError, TilefuseError
from .decompositions import decomposition_table

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


def _inner_compile(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> Callable:
    from ..codegen.compile_graph import compile_graph

    try:
        compiled = compile_graph(gm, example_inputs)
    except Exception as exc:
        if config.strict():
            raise
        kind = "" if isinstance(exc, TilefuseError) else f"{type(exc).__name__}: "
        _warn_once(f"could not compile a graph ({kind}{exc}); running it eagerly")
        log.debug("tilefuse: compile failure", exc_info=True)
        return make_boxed_func(gm.forward)
    compiled._boxed_call = True  # takes the argument list, as AOTAutograd calls it
    return compiled


def _is_symbolic(inputs: Sequence[Any]) -> bool:
    for x in inputs:
        if isinstance(x, torch.SymInt):
            return True
        if isinstance(x, torch.Tensor) and any(isinstance(s, torch.SymInt) for s in x.shape):
            return True
    return False


def _aot(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> Callable:
    backend = aot_autograd(
        fw_compiler=_inner_compile,
        bw_compiler=_inner_compile,
        decompositions=decomposition_table(),
    )
    return backend(gm, example_inputs)


class _Specializer:
    """Compiles ``gm`` once per concrete signature of its (symbolic) inputs."""

    def __init__(self, gm: torch.fx.GraphModule) -> None:
        self.gm = gm
        self.compiled: dict[tuple, Callable] = {}

    def _scalar_inputs(self) -> list[int]:
        """Indices of placeholders that the graph reads back with ``.item()``."""
        if not hasattr(self, "_item_inputs"):
            placeholders = [n for n in self.gm.graph.nodes if n.op == "placeholder"]
            self._item_inputs = sorted({
                placeholders.index(n.args[0]) for n in self.gm.graph.nodes
                if n.op == "call_method" and n.target == "item" and n.args[0] in placeholders
            })  # fmt: skip
        return self._item_inputs

    def _bake_scalars(self, args: Sequence[Any]) -> tuple[torch.fx.GraphModule, tuple]:
        """Python numbers that Dynamo passed as 0-dim tensors and reads back with
        ``.item()`` become constants of the specialized graph (and part of its key)."""
        gm = torch.fx.GraphModule(self.gm, copy.deepcopy(self.gm.graph))
        placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
        baked = []
        for node in list(gm.graph.nodes):
            if node.op != "call_method" or node.target != "item":
                continue
            src = node.args[0]
            if src not in placeholders:
                continue
            value = args[placeholders.index(src)]
            if not isinstance(value, torch.Tensor) or value.dim() != 0:
                continue
            scalar = value.item()
            baked.append(scalar)

            def swap(n: Any, item: Any = node, value: Any = scalar) -> Any:
                return value if n is item else n

            for user in list(node.users):
                user.args = torch.fx.node.map_arg(user.args, swap)
                user.kwargs = torch.fx.node.map_arg(user.kwargs, swap)
            gm.graph.erase_node(node)
        gm.recompile()
        return gm, tuple(baked)

    def __call__(self, *args: Any) -> Any:
        baked = tuple(
            args[i].item() if isinstance(args[i], torch.Tensor) and args[i].dim() == 0 else None
            for i in self._scalar_inputs()
        )
        key = baked + tuple(
            (tuple(a.shape), a.stride(), a.dtype, a.device, a.requires_grad)
            if isinstance(a, torch.Tensor)
            else a
            for a in args
        )
        fn = self.compiled.get(key)
        if fn is None:
            try:
                gm, _ = self._bake_scalars(args)
                fn = _aot(gm, list(args))
            except Exception as exc:
                if config.strict():
                    raise
                _warn_once(
                    f"could not specialize a dynamic-shape graph ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}); running it eagerly"
                )
                fn = self.gm.forward
            self.compiled[key] = fn
        return fn(*args)


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
    if _is_symbolic(example_inputs):
        return _Specializer(gm)
    return _aot(gm, example_inputs)
