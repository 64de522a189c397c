"""The extern choices: eager PyTorch (``tilefuse.plugin.ExternChoice``: always competes;
the correctness reference) and the vendor library's own fused bias (+ relu) epilogue, where
the epilogue is exactly that."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tilefuse import plugin

EXTERN_PROVIDER = "extern"
OPS = plugin.GEMM_OPS  # op -> number of op inputs before epilogue operands
ExternChoice = plugin.ExternChoice  # eager torch, then the epilogue's reference meaning


class VendorEpilogueChoice:
    """``a @ b + bias`` (``torch.addmm``) or ``relu(a @ b + bias)``
    (``torch._addmm_activation``) in one cuBLASLt call: the vendor library's fused bias
    epilogue, accumulated in float32 and rounded once, with no build step.

    Offered by ``vendor_epilogue_choice`` only for a 2-D product whose epilogue is exactly
    a row-broadcast bias of the output's dtype, optionally followed by ``relu``. (Its GELU
    form is not used: which GELU it computes depends on the device and the path taken.)
    One instance runs any sizes (``any_size``, see ``tilefuse.plugin.Choice``).
    """

    any_size = True

    def __init__(self, op: str, relu: bool) -> None:
        self.op = op
        self.relu = relu
        self.name = "torch._addmm_activation[relu]" if relu else "torch.addmm[bias]"

    def compile(self) -> None:
        return None

    def run(self, *inputs: Any, out: Any) -> None:
        import torch

        if self.op == "addmm":
            bias, a, b = inputs
        else:
            a, b, bias = inputs
        fn = torch._addmm_activation if self.relu else torch.addmm
        if out.is_contiguous():
            fn(bias, a, b, out=out)  # written in place: no extra pass over the output
        else:
            out.copy_(fn(bias, a, b))

    def cpp_launch(self) -> plugin.CppLaunch:
        """The same call through ATen's C++ API (for the C++ wrapper): ``launch(x0, x1,
        x2, out)`` takes the op's tensors then ``out``, as ``run`` does."""
        bias, a, b = ("x0", "x1", "x2") if self.op == "addmm" else ("x2", "x0", "x1")
        fn, tail = ("at::_addmm_activation", ", 1, 1, false") if self.relu else ("at::addmm", "")
        declarations = f"""\
void launch(const at::Tensor& x0, const at::Tensor& x1, const at::Tensor& x2,
            const at::Tensor& out) {{
    if (out.is_contiguous()) {{
        at::Tensor target = out;
        {fn}_out(target, {bias}, {a}, {b}{tail});
    }} else {{
        out.copy_({fn}({bias}, {a}, {b}{tail}));
    }}
}}
"""
        return plugin.CppLaunch(function="launch", declarations=declarations,
                                headers=("ATen/ATen.h",))  # fmt: skip

    def __repr__(self) -> str:
        return f"VendorEpilogueChoice({self.op!r}, relu={self.relu})"


def vendor_epilogue_choice(
    op: str,
    inputs: Sequence[plugin.TensorSpec],
    layout: plugin.TensorSpec,
    epilogue: plugin.Epilogue,
) -> VendorEpilogueChoice | None:
    """The cuBLASLt fused-epilogue choice when it computes exactly ``op`` + ``epilogue``."""
    if not layout.device.startswith("cuda") or len(layout.shape) != 2:
        return None
    if epilogue.out_dtype not in (None, layout.dtype):
        return None
    steps = list(epilogue.steps)
    if op == "addmm":
        bias = inputs[0]
    elif op == "mm" and steps and steps[0].kind == "add_bias_n":
        operand = steps.pop(0).operand
        if operand is None:
            return None
        bias = epilogue.operands[operand]
    else:
        return None
    if not steps:
        relu = False
        if op == "addmm":
            return None  # a bare addmm is the extern choice itself
    elif len(steps) == 1 and steps[0].kind == "relu":
        relu = True
    else:
        return None
    if len(bias.shape) != 1:
        return None
    if bias.dtype != layout.dtype or any(t.dtype != layout.dtype for t in inputs[-2:]):
        return None
    return VendorEpilogueChoice(op, relu)
