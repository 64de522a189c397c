"""A toy third-party autotune choice provider: torch-based GEMMs, through the plugin API alone."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from tilefuse import plugin

_OP_INPUTS = {"mm": 2, "addmm": 3, "bmm": 2}


class ToyMatmulChoice:
    """``torch.matmul`` (plus ``addmm``'s bias) then the epilogue's reference meaning.

    Picklable; nothing to build. Inputs follow the ``plugin.Choice`` conventions.
    """

    def __init__(self, op: str, epilogue: plugin.Epilogue) -> None:
        self.op = op
        self.epilogue = epilogue
        self.name = f"toy-matmul-{op}"

    def compile(self) -> None:
        return None

    def run(self, *inputs: Any, out: Any) -> None:
        import torch

        n = _OP_INPUTS[self.op]
        args, operands = inputs[:n], inputs[n:]
        if self.op == "addmm":
            acc = args[0] + torch.matmul(args[1], args[2])
        else:
            acc = torch.matmul(args[0], args[1])
        out.copy_(self.epilogue.apply_reference(acc, operands))


class ToyChoiceProvider:
    name = "toy-choices"
    api_version = plugin.API_VERSION
    version = "0.1.0"

    def supports(self, op: str, device: str) -> bool:
        return op in _OP_INPUTS and device.split(":")[0] in ("cpu", "cuda")

    def accepts(
        self,
        op: str,
        inputs: Sequence[plugin.TensorSpec],
        layout: plugin.TensorSpec,
        epilogue: plugin.Epilogue,
    ) -> plugin.Verdict:
        return plugin.Verdict.yes()  # the reference meaning runs any epilogue

    def choices(
        self,
        op: str,
        inputs: Sequence[plugin.TensorSpec],
        layout: plugin.TensorSpec,
        epilogue: plugin.Epilogue,
    ) -> Iterable[ToyMatmulChoice]:
        yield ToyMatmulChoice(op, epilogue)


PROVIDER = ToyChoiceProvider()
