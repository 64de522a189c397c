"""The decomposition table AOTAutograd uses: torch's core-aten table minus every op
tilefuse lowers itself (a lowering keeps structure a decomposition would lose,
e.g. softmax as max/sum/normalise in one kernel)."""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch._decomp import core_aten_decompositions, get_decompositions

from .lowering import LOWERINGS

aten = torch.ops.aten

# Composite ops worth decomposing that core-aten leaves alone.
EXTRA = [aten.addmm, aten.native_dropout, aten.rms_norm]


@functools.lru_cache(maxsize=1)
def decomposition_table() -> dict[Any, Any]:
    from . import lowerings  # noqa: F401  (fills LOWERINGS)

    table = dict(core_aten_decompositions().items())
    table.update(get_decompositions(EXTRA))
    for op in list(table):
        packet = getattr(op, "overloadpacket", None)
        if op in LOWERINGS or packet in LOWERINGS:
            if packet is not aten.addmm:
                del table[op]
    return table
