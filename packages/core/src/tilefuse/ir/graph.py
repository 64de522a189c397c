"""``LoweredGraph``: the IR of one compiled graph, as the frontend hands it on.

The frontend builds it (``tilefuse.frontend.lowering``); the scheduler and the pipeline
read it. It holds data only, so that the stages after the frontend depend on the IR and
never on the lowering code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .nodes import Buffer, Layout


@dataclass
class LoweredGraph:
    """The IR of one graph: buffers in program order, inputs and outputs.

    ``inputs`` has one entry per graph input (``None`` for a non-tensor input);
    ``buffers`` are the nodes in program order; ``outputs`` are ``Buffer`` objects, or
    Python values for non-tensor outputs; ``externs`` maps each op that runs eagerly to
    why; ``constants`` are the graph's attributes (real tensors). With symbolic sizes,
    ``scalars`` maps the index of each ``SymInt`` input to its expression and
    ``size_hints`` holds every size symbol's example value (``ir.symbolic``).
    """

    inputs: list[Buffer | None]
    buffers: list[Buffer]
    outputs: list[Any]
    externs: dict[str, str] = field(default_factory=dict)
    constants: dict[str, torch.Tensor] = field(default_factory=dict)
    scalars: dict[int, Any] = field(default_factory=dict)
    size_hints: dict[Any, int] = field(default_factory=dict)

    @property
    def symbolic(self) -> bool:
        """True when some size is a symbol (the graph is compiled for every size)."""
        return bool(self.size_hints)

    def buffer(self, name: str) -> Buffer:
        """The input, constant or node buffer called ``name``; ``KeyError`` when none is."""
        for b in self.inputs:
            if b is not None and b.name == name:
                return b
        if name in self.constants:
            return Buffer(name, Layout.of_result(self.constants[name]))
        for b in self.buffers:
            if b.name == name:
                return b
        raise KeyError(name)

    def buffers_by_name(self) -> dict[str, Buffer]:
        """Every buffer a kernel may name: nodes, tensor inputs and constants."""
        out = {b.name: b for b in self.buffers}
        out.update({b.name: b for b in self.inputs if b is not None})
        out.update({name: self.buffer(name) for name in self.constants})
        return out
