"""Which OpInfo entries, dtypes and samples the sweep runs.

The ops are every unary, binary and reduction ufunc of PyTorch's ``op_db`` plus the named
ops in ``NAMED``. A case is ``(op, dtype, sample index)``; samples come from the OpInfo's own
``sample_inputs`` under a seed derived from the op and dtype, so a case id names the same
tensors in every run and on every machine that has the same torch.

The CPU subset (CI, Triton interpreter) takes one small sample of each op at float32 and at
one other dtype, chosen by fixed rules (``cpu_dtypes``, ``cpu_pick``); the GPU sweep takes
every sample of every dtype.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.testing._internal.common_methods_invocations import (
    binary_ufuncs,
    op_db,
    reduction_ops,
    unary_ufuncs,
)
from torch.testing._internal.opinfo.core import OpInfo, SampleInput

# Ops that return views of their input (or may): ``view_cases`` runs each of their CPU
# samples with the outputs consumed (``runner._consumed``).
VIEW_OPS = (
    "view", "reshape", "reshape_as", "view_as", "permute", "transpose", "t", "mT", "expand",
    "expand_as", "broadcast_to", "narrow", "select", "slice", "unfold", "squeeze",
    "squeeze.multiple", "unsqueeze", "flatten", "unflatten", "movedim", "split",
    "split_with_sizes", "chunk", "unbind", "diagonal", "as_strided", "contiguous", "clone",
    "ravel", "atleast_2d", "tensor_split",
)  # fmt: skip

# The named ops the sweep covers beyond the ufunc lists (OpInfo full names; an entry that
# this torch's op_db lacks is left out, see ``missing_named``).
NAMED = (
    # softmax family
    "softmax", "softmax.with_dtype", "log_softmax", "log_softmax.with_dtype",
    "nn.functional.softmin", "masked.softmax", "masked.log_softmax", "masked.softmin",
    "logsumexp",
    # norms
    "nn.functional.layer_norm", "native_layer_norm", "nn.functional.group_norm",
    "native_group_norm", "nn.functional.batch_norm", "native_batch_norm",
    "nn.functional.rms_norm", "nn.functional.normalize", "nn.functional.instance_norm",
    # activations
    "nn.functional.gelu", "nn.functional.silu", "nn.functional.leaky_relu",
    "nn.functional.hardswish", "nn.functional.glu",
    # embedding, gather/scatter, index ops
    "nn.functional.embedding", "gather", "scatter", "scatter_add", "scatter_reduce.sum",
    "scatter_reduce.amax", "scatter_reduce.amin", "scatter_reduce.mean", "scatter_reduce.prod",
    "take_along_dim", "index_select", "index_add", "index_copy", "index_fill", "index_put",
    "index_reduce.amax", "index_reduce.amin", "index_reduce.mean", "index_reduce.prod",
    "__getitem__", "masked_fill", "take",
    # joining, padding, reordering
    "cat", "stack", "hstack", "vstack", "dstack", "constant_pad_nd",
    "nn.functional.pad.constant", "nn.functional.pad.reflect", "nn.functional.pad.replicate",
    "nn.functional.pad.circular", "flip", "fliplr", "flipud", "roll", "rot90", "repeat", "tile",
    # selection and clamping
    "where", "clamp", "lerp", "addcmul", "addcdiv",
    # statistics, arg reductions
    "var_mean", "var_mean.unbiased", "std_mean", "std_mean.unbiased",
    "max.reduction_no_dim", "max.reduction_with_dim", "min.reduction_no_dim",
    "min.reduction_with_dim", "aminmax", "norm", "linalg.vector_norm",
    # matrix products
    "mm", "bmm", "addmm", "addmm.decomposed", "baddbmm", "addbmm", "addmv", "mv", "matmul",
    "dot", "outer", "nn.functional.linear",
    # scans
    "cumsum", "cumprod", "logcumsumexp", "cummax", "cummin",
    # losses
    "nn.functional.cross_entropy", "nn.functional.nll_loss", "nn.functional.mse_loss",
    "nn.functional.l1_loss", "nn.functional.smooth_l1_loss", "nn.functional.huber_loss",
    "nn.functional.binary_cross_entropy_with_logits", "nn.functional.kl_div",
    # views
    *VIEW_OPS,
    # triangles
    "tril", "triu",
    # convolution and pooling (channels-last on CUDA: frontend/layout_choice.py)
    "nn.functional.conv2d", "nn.functional.max_pool2d", "nn.functional.avg_pool2d",
    # masked ops
    "masked.cumsum", "masked.cumprod", "masked.normalize", "masked.logaddexp",
)  # fmt: skip

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
INT_DTYPES = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
DTYPES = FLOAT_DTYPES + INT_DTYPES

# The CPU subset: the largest a picked sample may be (elements over all its tensors).
CPU_MAX_NUMEL = 512


def full_name(op: OpInfo) -> str:
    """``name.variant`` as PyTorch's own test ids spell an OpInfo."""
    return f"{op.name}.{op.variant_test_name}" if op.variant_test_name else op.name


@functools.lru_cache(maxsize=1)
def by_name() -> dict[str, OpInfo]:
    return {full_name(op): op for op in op_db}


def missing_named() -> list[str]:
    """Names in ``NAMED`` that this torch's ``op_db`` does not have."""
    return [n for n in NAMED if n not in by_name()]


@functools.lru_cache(maxsize=1)
def selected_ops() -> list[OpInfo]:
    """Every ufunc and reduction of ``op_db`` (not the ``_refs`` entries), then ``NAMED``."""
    in_db = {id(op) for op in op_db}
    chosen: dict[str, OpInfo] = {}
    for group in (unary_ufuncs, binary_ufuncs, reduction_ops):
        for op in group:
            if id(op) in in_db:
                chosen.setdefault(full_name(op), op)
    for name in NAMED:
        if name in by_name():
            chosen.setdefault(name, by_name()[name])
    return [chosen[n] for n in sorted(chosen)]


def op_dtypes(op: OpInfo, device_type: str) -> list[torch.dtype]:
    """The sweep's dtypes that ``op`` supports on ``device_type``, in ``DTYPES`` order."""
    supported = op.supported_dtypes(device_type)
    return [d for d in DTYPES if d in supported]


def seed_of(name: str, dtype: torch.dtype) -> int:
    return zlib.crc32(f"{name}/{dtype}".encode())


def iter_samples(op: OpInfo, device: str, dtype: torch.dtype) -> Iterator[SampleInput]:
    """The op's samples for ``dtype``, the same tensors on every call (seeded RNG).

    Float32 samples require grad where the op supports autograd (the backward is checked).
    The seed is set before the first sample, so sample ``i`` is the same whether or not
    the caller goes on past it.
    """
    requires_grad = dtype == torch.float32 and op.supports_autograd
    with torch.random.fork_rng(devices=[torch.device(device)] if device != "cpu" else []):
        torch.manual_seed(seed_of(full_name(op), dtype))
        yield from op.sample_inputs(device, dtype, requires_grad=requires_grad)


def samples(op: OpInfo, device: str, dtype: torch.dtype) -> list[SampleInput]:
    """Every sample of ``op`` at ``dtype`` (see ``iter_samples``)."""
    return list(iter_samples(op, device, dtype))


def sample_at(op: OpInfo, device: str, dtype: torch.dtype, index: int) -> SampleInput | None:
    """Sample ``index`` of ``iter_samples``, or ``None`` when there are fewer."""
    for i, sample in enumerate(iter_samples(op, device, dtype)):
        if i == index:
            return sample
    return None


def sample_tensors(sample: SampleInput) -> Iterator[torch.Tensor]:
    leaves, _ = torch.utils._pytree.tree_flatten((sample.input, sample.args, sample.kwargs))
    return (t for t in leaves if isinstance(t, torch.Tensor))


def sample_numel(sample: SampleInput) -> int:
    return sum(t.numel() for t in sample_tensors(sample))


def cpu_pick(op: OpInfo, dtype: torch.dtype) -> int:
    """The CPU subset's sample index for ``op`` at ``dtype``: the first sample that holds
    at least one element and at most ``CPU_MAX_NUMEL`` in all, in the OpInfo's order (its
    first samples are its canonical cases); the smallest nonempty one if none fits."""
    sizes = []
    for i, sample in enumerate(iter_samples(op, "cpu", dtype)):
        n = sample_numel(sample)
        if 0 < n <= CPU_MAX_NUMEL:
            return i
        sizes.append(n)
    nonempty = [i for i, n in enumerate(sizes) if n > 0] or list(range(len(sizes)))
    return min(nonempty, key=lambda i: sizes[i])


def cpu_dtypes(op: OpInfo) -> list[torch.dtype]:
    """The CPU subset's dtypes for ``op``: float32 (forward and backward) and one other
    of its sweep dtypes, rotated by the op's name so that the subset as a whole covers
    every dtype; just the first supported dtype for an op without float32."""
    dtypes = op_dtypes(op, "cpu")
    if torch.float32 not in dtypes:
        return dtypes[:1]
    others = [d for d in dtypes if d != torch.float32]
    if not others:
        return [torch.float32]
    return [torch.float32, others[zlib.crc32(full_name(op).encode()) % len(others)]]


@dataclass(frozen=True)
class Case:
    """One (op, dtype, sample index) of the sweep."""

    name: str
    dtype: torch.dtype
    index: int

    @property
    def op(self) -> OpInfo:
        return by_name()[self.name]

    @property
    def id(self) -> str:
        return f"{self.name}-{str(self.dtype).removeprefix('torch.')}-{self.index}"


def cpu_cases() -> list[Case]:
    """The CI subset, in a fixed order."""
    return [
        Case(full_name(op), dtype, cpu_pick(op, dtype))
        for op in selected_ops()
        for dtype in cpu_dtypes(op)
    ]


def view_cases() -> list[Case]:
    """Every float32 CPU sample of ``VIEW_OPS`` (a few hundred small cases)."""
    ops = {full_name(op): op for op in selected_ops()}
    return [
        Case(name, torch.float32, i)
        for name in VIEW_OPS
        if name in ops
        for i, _ in enumerate(iter_samples(ops[name], "cpu", torch.float32))
    ]


def all_cases(device: str, start: int = 0, stop: int | None = None) -> list[Case]:
    """Every sample of every selected op and dtype on ``device`` (the GPU sweep), or the
    samples numbered ``start`` to ``stop - 1`` of each (op, dtype) for a shorter run."""
    device_type = torch.device(device).type
    found = []
    for op in selected_ops():
        for dtype in op_dtypes(op, device_type):
            for i, _ in enumerate(iter_samples(op, device, dtype)):
                if stop is not None and i >= stop:
                    break
                if i >= start:
                    found.append(Case(full_name(op), dtype, i))
    return found


def describe(sample: SampleInput) -> str:
    """A short text of a sample's shapes and arguments, for failure messages."""

    def show(x: Any) -> str:
        if isinstance(x, torch.Tensor):
            return f"Tensor{tuple(x.shape)}:{str(x.dtype).removeprefix('torch.')}"
        if isinstance(x, (list, tuple)):
            inner = ", ".join(show(v) for v in x)
            return f"[{inner}]" if isinstance(x, list) else f"({inner})"
        return repr(x)

    kwargs = ", ".join(f"{k}={show(v)}" for k, v in sample.kwargs.items())
    return f"input={show(sample.input)} args={show(tuple(sample.args))} kwargs={{{kwargs}}}"
