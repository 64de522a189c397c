"""The C++ launch of a CUTLASS choice (``cpp_launch``): the sizes and strides it bakes in
are the ones the ctypes launch computes from real tensors, and its pointers are the
right tensors (no GPU, no compiler: real CPU tensors stand in for the GPU's)."""

from __future__ import annotations

import re

import pytest
import torch

from tests.backend_cuda.cases import make_case
from tests.backend_cuda.test_render import EPILOGUES, LAYOUTS
from tilefuse.plugin import TensorSpec
from tilefuse_cuda.cpp_launch import render_cutlass_launch
from tilefuse_cuda.launcher import pack_arguments
from tilefuse_cuda.problem import analyse


def _cpu(spec: TensorSpec) -> torch.Tensor:
    return torch.empty_strided(spec.shape, spec.stride, dtype=getattr(torch, spec.dtype))


@pytest.mark.parametrize("op", ["mm", "addmm", "bmm"])
@pytest.mark.parametrize("epilogue", sorted(EPILOGUES))
def test_baked_arguments_match_the_ctypes_launch(op, epilogue):
    for a_col, b_col, d_col in LAYOUTS:
        case = make_case(op, 64, 128, 256, batch=3, a_col=a_col, b_col=b_col, d_col=d_col,
                         steps=EPILOGUES[epilogue])  # fmt: skip
        problem, _ = analyse(case.op, case.specs, case.layout, case.epilogue)
        launch = render_cutlass_launch(kernel_name="k", library="/x/kernel.so", problem=problem,
                                       inputs=case.specs, layout=case.layout)  # fmt: skip
        tensors = [_cpu(s) for s in (*case.specs, case.layout)]
        ptrs, ints = pack_arguments(problem, tensors[:-1], tensors[-1])
        baked = re.search(r"kInts\[\] = \{(.*)\};", launch.declarations).group(1)
        assert [int(v) for v in re.findall(r"int64_t\((-?\d+)\)", baked)] == list(ints)[
            : baked.count("int64_t(")
        ]
        # each pointer slot names the tensor whose address the ctypes launch passes there
        body = launch.declarations.split("void* ptrs[] = {", 1)[1].split("};", 1)[0]
        slots = [s.strip() for s in body.split(",\n")]
        by_address = {t.data_ptr(): i for i, t in enumerate(tensors)}
        for slot, address in zip(slots, ptrs):
            if address is None:
                assert slot == "nullptr"
            else:
                assert re.search(rf"\ba{by_address[address]}\b", slot), (slot, address)
        assert f"run(e, kName, ptrs, kInts, workspace, a{len(tensors) - 1})" in (
            launch.declarations
        )


def test_a_library_path_that_is_not_a_plain_string_is_refused():
    case = make_case("mm", 64, 128, 256)
    problem, _ = analyse(case.op, case.specs, case.layout, case.epilogue)
    with pytest.raises(ValueError, match="library path"):
        render_cutlass_launch(kernel_name="k", library='/x/"evil".so', problem=problem,
                              inputs=case.specs, layout=case.layout)  # fmt: skip
