"""How a training graph is split into its forward and its backward.

``partition_for(gm)`` is the ``partition_fn`` handed to AOTAutograd for the Dynamo graph
``gm``: PyTorch's min-cut partition, as Inductor uses it, where the backward recomputes
cheap forward values instead of reading saved ones (a cross-entropy saves two values per
row, not a ``log_softmax`` the size of the logits). ``min_cut`` says what it adjusts.

A graph that writes into one of its inputs keeps the default partition, which saves every
forward value the backward reads: a recomputation in the backward would read the input
after the write. AOTAutograd returns each written input's new value from the forward,
before the graph's own outputs, so such a graph is one whose forward has more outputs
than ``gm``. Writes outside the graph (after a graph break, or between the forward and
``backward()``) are not seen: as with Inductor, a backward may then read the new value.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
import torch.fx
from torch._functorch.partitioners import default_partition, min_cut_rematerialization_partition
from torch.utils._pytree import tree_leaves

aten = torch.ops.aten


def partition_for(gm: torch.fx.GraphModule) -> Callable[..., Any]:
    """The ``partition_fn`` for the Dynamo graph ``gm`` (see the module docstring)."""
    output = next(n for n in reversed(gm.graph.nodes) if n.op == "output")
    outputs = len(tree_leaves(output.args[0]))

    def partition(joint: torch.fx.GraphModule, joint_inputs: Any, **kwargs: Any) -> Any:
        if kwargs["num_fwd_outputs"] > outputs:
            return default_partition(joint, joint_inputs, **kwargs)
        return min_cut(joint, joint_inputs, **kwargs)

    return partition


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


def _draws_random(node: torch.fx.Node) -> bool:
    target = node.target
    return isinstance(target, torch._ops.OpOverload) and (
        torch.Tag.nondeterministic_seeded in target.tags
    )
