"""The extern choice: eager PyTorch. It always competes and is the correctness reference."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tilefuse import plugin

EXTERN_PROVIDER = "extern"
OPS = {"mm": 2, "addmm": 3, "bmm": 2}  # op -> number of op inputs before epilogue operands


class ExternChoice:
    """``torch.mm`` / ``torch.addmm`` / ``torch.bmm``, then ``Epilogue.apply_reference``.

    Picklable; ``compile()`` does nothing. Inputs follow the ``plugin.Choice``
    conventions: the op's tensors, then the epilogue's operands.
    """

    def __init__(self, op: str, epilogue: plugin.Epilogue | None = None) -> None:
        if op not in OPS:
            raise ValueError(f"unknown op {op!r}; the extern choice knows {sorted(OPS)}")
        self.op = op
        self.epilogue = epilogue if epilogue is not None else plugin.Epilogue()
        self.name = f"torch.{op}"

    def compile(self) -> None:
        return None

    def _compute(self, op_inputs: Sequence[Any], out: Any | None) -> Any:
        import torch

        fn: Any = {"mm": torch.mm, "addmm": torch.addmm, "bmm": torch.bmm}[self.op]
        if out is None:
            return fn(*op_inputs)
        return fn(*op_inputs, out=out)

    def run(self, *inputs: Any, out: Any) -> None:
        n = OPS[self.op]
        op_inputs, operands = inputs[:n], inputs[n:]
        epi = self.epilogue
        plain = not epi.steps and (epi.out_dtype is None or epi.out_dtype == str(out.dtype)[6:])
        if plain and out.is_contiguous():
            self._compute(op_inputs, out)
            return
        acc = self._compute(op_inputs, None)
        out.copy_(epi.apply_reference(acc, operands) if epi.steps or epi.out_dtype else acc)

    def __repr__(self) -> str:
        return f"ExternChoice({self.op!r})"
