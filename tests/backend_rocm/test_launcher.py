"""``pack_arguments`` encodes each operand's layout and broadcast exactly: the kernel's
indexing (``base + bz*s0 + m*s1 + n*s2``) is replayed with ``torch.as_strided`` on the packed
integers and compared with eager PyTorch, on CPU tensors."""

from __future__ import annotations

import pytest
import torch

from tilefuse import plugin
from tilefuse.errors import ChoiceFailed
from tilefuse_rocm.gemm_spec import GemmProblem
from tilefuse_rocm.launcher import pack_arguments


def _view(t, shape, strides):
    return torch.as_strided(t, shape, strides, t.storage_offset())


def _replay(problem: GemmProblem, packed) -> torch.Tensor:
    """What the kernel computes, reading memory only through the packed strides."""
    m, n, k, batch = packed.ints[:4]
    s = [packed.ints[4 + 3 * i : 7 + 3 * i] for i in range((len(packed.ints) - 4) // 3)]
    a, b, bias, _out, *ops = packed.tensors
    acc = _view(a, (batch, m, k), s[0]).float() @ _view(b, (batch, k, n), s[1]).float()
    if bias is not None:
        acc = acc + _view(bias, (batch, m, n), s[2]).float()
    views = [_view(t, (batch, m, n), s[4 + i]) for i, t in enumerate(ops)]
    return problem.epilogue.apply_reference(acc, views)


def _spec(t):
    return plugin.TensorSpec.of(t)


CASES = ["mm", "mm_transposed", "addmm_bias_n", "addmm_bias_mn_t", "bmm_ops"]


@pytest.mark.parametrize("case", CASES)
def test_packed_strides_reproduce_eager(case):
    gen = torch.Generator().manual_seed(1)
    m, k, n, bsz = 5, 3, 7, 2

    def r(*shape):
        return torch.randn(*shape, generator=gen)

    steps: tuple[plugin.EpilogueStep, ...] = ()
    ops: list[torch.Tensor] = []
    bias = None
    if case.startswith("bmm"):
        a, b = r(bsz, m, k), r(bsz, n, k).transpose(1, 2)
        ops = [r(n), r(bsz, m, 1), r(bsz, n, m).transpose(1, 2)]
        steps = (
            plugin.EpilogueStep("add_bias_n", 0),
            plugin.EpilogueStep("add_bias_m", 1),
            plugin.EpilogueStep("add_matrix", 2),
            plugin.EpilogueStep("silu"),
        )
        eager = torch.nn.functional.silu(a @ b + ops[0] + ops[1] + ops[2])
        op = "bmm"
    else:
        a, b = r(m, k), r(k, n)
        if case == "mm_transposed":
            a, b = r(k, m).t(), r(n, k).t()
        eager = a @ b
        op = "mm"
        if case == "addmm_bias_n":
            bias = r(n)
        elif case == "addmm_bias_mn_t":
            bias = r(n, m).t()
            ops = [r(m, 1)]
            steps = (plugin.EpilogueStep("add_bias_m", 0), plugin.EpilogueStep("relu"))
        if bias is not None:
            op = "addmm"
            eager = torch.addmm(bias, a, b)
            if ops:
                eager = torch.relu(eager + ops[0])
    epi = plugin.Epilogue(steps=steps, operands=tuple(_spec(t) for t in ops))
    out = torch.empty_like(eager)
    bias_dtype = None if bias is None else "float32"
    problem = GemmProblem(op, "float32", "float32", "float32", bias_dtype=bias_dtype, epilogue=epi)
    inputs = ([bias] if bias is not None else []) + [a, b] + ops
    packed = pack_arguments(problem, inputs, out)
    got = _replay(problem, packed).reshape(eager.shape)
    torch.testing.assert_close(got, eager, rtol=1e-5, atol=1e-5)


def test_mismatches_are_reported():
    problem = GemmProblem("mm", "bfloat16", "bfloat16", "bfloat16")
    a, b = torch.zeros(4, 3), torch.zeros(3, 5)
    with pytest.raises(ChoiceFailed, match="a is float32 but this kernel was built for bfloat16"):
        pack_arguments(problem, [a, b], torch.zeros(4, 5))
    with pytest.raises(ChoiceFailed, match="takes 2 inputs"):
        pack_arguments(problem, [a], torch.zeros(4, 5))
    with pytest.raises(ChoiceFailed, match="do not match"):
        pack_arguments(GemmProblem("mm", "float32", "float32", "float32"), [a, a], a)
