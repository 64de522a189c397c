"""Rewrites of Dynamo's FX graph (torch-level ops) before AOTAutograd traces it to ATen.

``dense_attention_masks(gm)``: an attention mask that reaches
``scaled_dot_product_attention`` with a last dim that does not step by one element (a
padding mask ``expand``-ed over the key dim, as transformers builds one while tracing) is
made contiguous first. The op picks its kernel while AOTAutograd traces it, and with
such a mask it picks the math path: on CUDA two float32 batched GEMMs and a softmax
(BERT's four attention layers: about 0.7 ms against 0.08 ms for the fused kernel eager
runs without a mask). With a contiguous copy of the same values it picks a fused kernel.
The two differ on a query row whose keys are all masked: the math path returns zeros
there (its softmax of no key is zero), a fused kernel does not; the rewritten graph
zeroes those rows itself, so its result is the math path's. Left alone: a mask with a
dropout probability that is not a literal zero (the fused kernels draw other random
numbers than the math path), an attention whose q, k or v requires grad (the fused
backward of an entirely masked row is not the math path's: cuDNN's can give NaN), and a
mask off CUDA (PyTorch's CPU flash kernel takes a strided mask as it is).
"""

from __future__ import annotations

import contextlib

import torch

_SDPA = torch._C._nn.scaled_dot_product_attention
_MASK_POSITION = 3  # attn_mask's position among the op's arguments
_DROPOUT_POSITION = 4
DEVICE_TYPES = ("cuda",)  # where eager's SDPA takes its math path for such a mask


def dense_attention_masks(gm: torch.fx.GraphModule) -> int:
    """Make each strided attention mask in ``gm`` contiguous and zero the rows it masks
    entirely (see the module docstring); returns how many attention calls were rewritten,
    recompiling ``gm`` when any was. A mask shared by several calls (one per layer) is
    made contiguous, and its rows with a key found, once."""
    rewritten = 0
    graph = gm.graph
    prepared: dict[torch.fx.Node, tuple[torch.fx.Node, torch.fx.Node]] = {}
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not _SDPA:
            continue
        mask = _argument(node, "attn_mask", _MASK_POSITION)
        if not isinstance(mask, torch.fx.Node) or not _strided_last_dim(mask):
            continue
        if _argument(node, "dropout_p", _DROPOUT_POSITION) not in (None, 0, 0.0):
            continue
        if any(_requires_grad(arg) for arg in node.args[:3]):
            continue
        if mask not in prepared:
            prepared[mask] = _dense_and_any_key(graph, mask)
        dense, any_key = prepared[mask]
        if "attn_mask" in node.kwargs:
            node.kwargs = {**node.kwargs, "attn_mask": dense}
        else:
            node.args = (*node.args[:_MASK_POSITION], dense, *node.args[_MASK_POSITION + 1 :])
        with graph.inserting_after(node):
            result = graph.call_function(torch.where, (any_key, node, 0.0))
        node.replace_all_uses_with(result, delete_user_cb=lambda user, r=result: user is not r)
        rewritten += 1
    if rewritten:
        graph.lint()
        gm.recompile()
    return rewritten


def _dense_and_any_key(
    graph: torch.fx.Graph, mask: torch.fx.Node
) -> tuple[torch.fx.Node, torch.fx.Node]:
    """Nodes right after ``mask``: its contiguous copy, and per query row whether any key
    is kept (a bool mask's True; an additive mask's entry other than -inf)."""
    example = mask.meta["example_value"]
    with graph.inserting_after(mask):
        dense = graph.call_method("contiguous", (mask,))
    dense.meta["example_value"] = _contiguous_example(example)
    keys = dense
    if example.dtype != torch.bool:
        with graph.inserting_after(dense):
            keys = graph.call_function(torch.ne, (dense, float("-inf")))
    with graph.inserting_after(keys):
        any_key = graph.call_method("any", (keys, -1), {"keepdim": True})
    return dense, any_key


def _requires_grad(arg: object) -> bool:
    value = arg.meta.get("example_value") if isinstance(arg, torch.fx.Node) else None
    return isinstance(value, torch.Tensor) and value.requires_grad


def _argument(node: torch.fx.Node, name: str, position: int) -> object:
    if name in node.kwargs:
        return node.kwargs[name]
    return node.args[position] if len(node.args) > position else None


def _contiguous_example(value: torch.Tensor) -> torch.Tensor:
    """The contiguous twin of a (fake) example value, made in its own fake mode."""
    mode = getattr(value, "fake_mode", None)
    with mode if mode is not None else contextlib.nullcontext():
        return value.contiguous()


def _strided_last_dim(node: torch.fx.Node) -> bool:
    """Whether ``node`` is a CUDA mask whose last dim does not step by one. (A CPU
    mask is left alone: PyTorch's CPU flash kernel takes it as it is.)"""
    value = node.meta.get("example_value")
    if not isinstance(value, torch.Tensor) or value.device.type not in DEVICE_TYPES:
        return False
    return value.dim() >= 1 and value.shape[-1] > 1 and value.stride(-1) != 1
