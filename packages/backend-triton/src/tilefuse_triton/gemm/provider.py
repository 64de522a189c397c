"""``PROVIDER``: the Triton GEMM template as a ``tilefuse.autotune.choices`` entry point.

Listing plugins imports this module, so it imports neither triton nor torch at
top level: ``supports`` only reads the environment, ``choices`` queries torch
for the device and ``TritonGemmChoice.compile`` imports triton.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence

from tilefuse import plugin

from .choice import TritonGemmChoice
from .config import GemmConfig, device_traits, search_space
from .problem import OPS, GemmProblem, Unsupported
from .template import TEMPLATE_REVISION, kernel_name

log = logging.getLogger(__name__)


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("tilefuse-backend-triton")
    except Exception:
        return "0+unknown"


class TritonGemmProvider:
    """Offers one ``TritonGemmChoice`` per config of the search space; the first is the heuristic.

    ``supports(op, device)``: ``op`` in ``mm``/``addmm``/``bmm``, triton installed,
    and the device is CUDA, or the CPU with ``TRITON_INTERPRET=1``.
    ``accepts`` refuses, with the reason, what the template cannot serve (mixed or
    non-float dtypes, an unknown epilogue step, an operand that does not
    broadcast to the output); ``choices`` yields nothing for those.
    The number of choices follows ``TILEFUSE_AUTOTUNE`` (off: 1, default: a
    few, max: all). In every mode but ``off``, a GEMM with an epilogue also gets, second,
    the vendor product followed by the epilogue as one pass (``vendor_first``): what the
    graph would run unfused, so that measuring can prefer it when fusing loses (and
    ``default`` finds such a cached winner).
    """

    name = "triton"
    api_version = plugin.API_VERSION
    version = f"{_package_version()}+template{TEMPLATE_REVISION}"

    def supports(self, op: str, device: str) -> bool:
        if op not in OPS or importlib.util.find_spec("triton") is None:
            return False
        kind = device.split(":", 1)[0]
        if kind == "cuda":
            return True
        return kind == "cpu" and plugin.triton_interpreted()

    def accepts(
        self,
        op: str,
        inputs: Sequence[plugin.TensorSpec],
        layout: plugin.TensorSpec,
        epilogue: plugin.Epilogue,
    ) -> plugin.Verdict:
        """Whether the template renders ``op`` on ``inputs`` with ``epilogue`` fused, and
        why not (``plugin.ChoiceProvider.accepts``); never raises."""
        if not self.supports(op, layout.device):
            return plugin.Verdict.no(f"the triton provider does not serve {op} on {layout.device}")
        try:
            GemmProblem.of(op, inputs, layout, epilogue)
        except Unsupported as error:
            return plugin.Verdict.no(f"the Triton GEMM template cannot serve it ({error})")
        return plugin.Verdict.yes()

    def choices(
        self,
        op: str,
        inputs: Sequence[plugin.TensorSpec],
        layout: plugin.TensorSpec,
        epilogue: plugin.Epilogue,
    ) -> list[TritonGemmChoice]:
        verdict = self.accepts(op, inputs, layout, epilogue)
        if not verdict.ok:
            log.debug("triton GEMM offers no choice: %s", verdict.reason)
            return []
        problem = GemmProblem.of(op, inputs, layout, epilogue)
        on_cuda = layout.device.startswith("cuda")
        configs = search_space(
            problem.m,
            problem.n,
            problem.k,
            problem.batch,
            problem.dtype,
            device_traits(layout.device),
            tf32=on_cuda and plugin.tf32_matmuls(),
            mode=plugin.autotune_mode(),
        )
        choices = [
            TritonGemmChoice(kernel_name(op, c), op, c, tuple(inputs), layout, epilogue)
            for c in configs
        ]
        if _vendor_first_serves(op, problem) and plugin.autotune_mode() != "off":
            name = kernel_name(op, VENDOR_FIRST_PASS, vendor_first=True)
            unfused = TritonGemmChoice(
                name, op, VENDOR_FIRST_PASS, tuple(inputs), layout, epilogue, vendor_first=True
            )
            # second: the heuristic pick stays first, and quick mode's short list has it;
            # offered in default mode too, so that a winner quick or max found is found
            choices.insert(1, unfused)
        return choices


# The pass of a ``vendor_first`` choice: a tile of the output per program, no K loop.
VENDOR_FIRST_PASS = GemmConfig(64, 128, 16, num_stages=1, num_warps=4, group_m=8)


def _vendor_first_serves(op: str, problem: GemmProblem) -> bool:
    """Whether the vendor product then a pass (``render_gemm(vendor_first=True)``) is worth
    measuring: the epilogue is more than addmm's own bias (the vendor ``addmm`` is extern),
    and the product can write the output itself."""
    own_bias = 1 if op == "addmm" else 0
    return len(problem.steps) > own_bias and problem.dtype == problem.out_dtype


PROVIDER = TritonGemmProvider()
