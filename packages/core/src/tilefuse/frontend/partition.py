"""How a training graph is split into its forward and its backward.

``partition_for(gm)`` is the ``partition_fn`` handed to AOTAutograd for the Dynamo graph
``gm``: PyTorch's min-cut partition, as Inductor uses it, where the backward recomputes
cheap forward values instead of reading saved ones (a cross-entropy saves two values per
row, not a ``log_softmax`` the size of the logits). ``min_cut`` says what it adjusts.

A graph that writes into one of its inputs (``b.mul_(2)``, ``out=``, ``inplace=True``)
keeps the default partition, which saves every forward value the backward reads: a
recomputation in the backward would read the input after the write.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.fx
from torch._functorch.partitioners import default_partition, min_cut_rematerialization_partition

aten = torch.ops.aten

_INPLACE_OPERATORS = {
    operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.ifloordiv,
    operator.imod, operator.ipow, operator.iand, operator.ior, operator.ixor,
    operator.ilshift, operator.irshift, operator.imatmul, operator.setitem,
}  # fmt: skip
# Methods whose trailing underscore changes no tensor data.
_METADATA_METHODS = {"requires_grad_", "retain_grad", "share_memory_"}
# Ops whose result may share its first argument's storage: a write into the result
# writes into that argument.
_ALIASING = {
    "view", "view_as", "reshape", "reshape_as", "transpose", "t", "T", "mT", "permute",
    "select", "narrow", "unsqueeze", "squeeze", "expand", "expand_as", "flatten",
    "unflatten", "as_strided", "unbind", "split", "chunk", "movedim", "swapaxes",
    "swapdims", "diagonal", "real", "imag", "detach", "contiguous", "getitem",
    "__getitem__", "unfold", "tensor_split", "split_with_sizes", "view_as_real",
    "view_as_complex",
}  # fmt: skip


def partition_for(gm: torch.fx.GraphModule) -> Callable[..., Any]:
    """The ``partition_fn`` for the Dynamo graph ``gm`` (see the module docstring)."""
    return default_partition if mutates_an_input(gm) else min_cut


def min_cut(joint: torch.fx.GraphModule, joint_inputs: Any, **kwargs: Any) -> Any:
    """PyTorch's min-cut partition of ``joint``, after two adjustments:

    * ``detach`` nodes inside the graph are dropped (values, not autograd, flow there):
      the partitioner counts a value that a ``detach`` reads in the backward as one it
      must save, which pinned ``log_softmax``'s result;
    * where the graph draws random numbers, the partitioner's common-subexpression pass
      is off: it would merge two ``randn_like(x)`` calls into one draw."""
    changed = False
    for node in list(joint.graph.nodes):
        if node.op == "call_function" and node.target is aten.detach.default:
            if all(user.op != "output" for user in node.users):
                node.replace_all_uses_with(node.args[0])
                joint.graph.erase_node(node)
                changed = True
    if changed:
        joint.recompile()
    no_cse: Any = contextlib.nullcontext()
    if any(_draws_random(node) for node in joint.graph.nodes):
        no_cse = torch._functorch.config.patch(cse=False)
    with no_cse:
        return min_cut_rematerialization_partition(joint, joint_inputs, **kwargs)


def mutates_an_input(gm: torch.fx.GraphModule) -> bool:
    """Whether some node of ``gm`` writes into a graph input (a placeholder or an
    attribute: parameters and buffers) or a view of one. Conservative where it cannot
    tell: any op with a mutable schema counts as writing into each argument."""
    for node in gm.graph.nodes:
        for target in _written(node):
            if isinstance(target, torch.fx.Node) and _is_input(target):
                return True
    return False


def _written(node: torch.fx.Node) -> list[Any]:
    """The arguments ``node`` may write into."""
    target = node.target
    written: list[Any] = []
    if node.op == "call_method" and isinstance(target, str):
        if target.endswith("_") and not target.startswith("_") and target not in _METADATA_METHODS:
            written.append(node.args[0])
    elif node.op == "call_function":
        if target in _INPLACE_OPERATORS:
            written.append(node.args[0])
        elif isinstance(target, torch._ops.OpOverload):
            if target._schema.is_mutable:
                written.extend(node.args)
        else:
            name = getattr(target, "__name__", "")
            if name.endswith("_") and not name.startswith("_") and node.args:
                written.append(node.args[0])
    if node.kwargs.get("inplace") is True and node.args:
        written.append(node.args[0])
    out = node.kwargs.get("out")
    if out is not None:
        written.extend(out if isinstance(out, (list, tuple)) else [out])
    return written


def _is_input(node: torch.fx.Node) -> bool:
    """Whether ``node`` is a graph input, or (through ops that may alias their first
    argument) a view of one."""
    seen: set[torch.fx.Node] = set()
    while node not in seen:
        seen.add(node)
        if node.op in ("placeholder", "get_attr"):
            return True
        name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
        if name not in _ALIASING or not node.args or not isinstance(node.args[0], torch.fx.Node):
            return False
        node = node.args[0]
    return False


def _draws_random(node: torch.fx.Node) -> bool:
    target = node.target
    return isinstance(target, torch._ops.OpOverload) and (
        torch.Tag.nondeterministic_seeded in target.tags
    )
