"""Random tensors drawn inside kernels: ``rand`` and ``rand_like`` (dropout's mask, after
its decomposition, is ``rand_like(x) > p``).

Where the device's kernel backends declare ``plugin.CAP_RANDOM``, each op gets its own
seed (``random_seed``: an eager ``randint`` from torch's default generator per call) and
each element the value ``ops.rand(seed, flat index)``. A kernel that reads the tensor
computes it in place, and two kernels that read it compute the same values, so the mask
fuses into whatever consumes it. Elsewhere, and for float64 (``rand`` draws float32),
the op stays an eager call.

The values are uniform in [0, 1) and repeat under ``torch.manual_seed``, but they are not
eager's numbers: eager's CUDA generator draws from the same Philox family in another
order.
"""

from __future__ import annotations

import torch

from ...ir.index import flatten
from ...ir.ops import ops
from ..lowering import Unsupported, register
from ..values import LazyValue
from .common import out_meta, out_sizes

aten = torch.ops.aten

# The largest value below 1 of each dtype: a float32 draw rounded to a half type could
# otherwise become 1.0, outside [0, 1).
_BELOW_ONE = {
    torch.float32: 1.0 - 2.0**-24,
    torch.float16: 1.0 - 2.0**-11,
    torch.bfloat16: 1.0 - 2.0**-8,
}


@register(aten.rand_like, aten.rand)
def _rand(ctx, node, *args, **kwargs):
    meta = out_meta(node)
    if meta.dtype not in _BELOW_ONE:
        raise Unsupported(f"random {meta.dtype} values are drawn eagerly (kernels draw float32)")
    if kwargs.get("generator") is not None:
        raise Unsupported("a random op with its own generator")
    if not ctx.generates_random(meta.device):
        raise Unsupported("no kernel backend on the device declares random numbers (CAP_RANDOM)")
    seed = ctx.random_seed(meta.device)
    size = out_sizes(node)
    below_one = _BELOW_ONE[meta.dtype]

    def fn(idx):
        offset = ops.index_expr(flatten(idx, size), torch.int64)
        value = ops.rand(seed.load([0]), offset)
        if meta.dtype != torch.float32:
            value = ops.minimum(value, ops.constant(below_one, torch.float32))
        return ops.to_dtype(value, meta.dtype)

    return LazyValue(meta.dtype, meta.device, size, fn)
