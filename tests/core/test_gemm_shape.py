"""``plugin.GemmShape``: the one validation of a GEMM request that template providers share."""

from __future__ import annotations

import pytest

from tilefuse import plugin
from tilefuse.errors import Unsupported

Spec = plugin.TensorSpec


def spec(shape, dtype="float32", stride=None):
    """A spec of ``shape``, contiguous unless ``stride`` is given."""
    if stride is None:
        stride, acc = [], 1
        for size in reversed(shape):
            stride.insert(0, acc)
            acc *= size
    return Spec(tuple(shape), tuple(stride), dtype, "cpu")


def test_mm_sizes_parts_and_row_major():
    a, b, out = spec((5, 3)), spec((3, 7)), spec((5, 7))
    shape = plugin.GemmShape.of("mm", (a, b), out, plugin.Epilogue())
    assert (shape.m, shape.n, shape.k, shape.batch) == (5, 7, 3, 1)
    assert (shape.a, shape.b, shape.out, shape.bias, shape.operands) == (a, b, out, None, ())
    assert (shape.a_major, shape.b_major, shape.out_major) == ("row", "row", "row")
    assert shape.extras == ()


def test_addmm_finds_bias_first_and_a_b_after():
    bias, a, b, out = spec((7,)), spec((5, 3)), spec((3, 7)), spec((5, 7))
    shape = plugin.GemmShape.of("addmm", (bias, a, b), out, plugin.Epilogue())
    assert (shape.bias, shape.a, shape.b) == (bias, a, b)
    assert (shape.m, shape.n, shape.k) == (5, 7, 3)
    assert shape.extras == (bias,)


def test_bmm_batch_and_transposed_operands():
    a = spec((4, 5, 3), stride=(15, 1, 5))  # each [5, 3] matrix column-major
    b = spec((4, 3, 7), stride=(21, 7, 1))
    out = spec((4, 5, 7), stride=(35, 1, 5))
    shape = plugin.GemmShape.of("bmm", (a, b), out, plugin.Epilogue())
    assert (shape.m, shape.n, shape.k, shape.batch) == (5, 7, 3, 4)
    assert (shape.a_major, shape.b_major, shape.out_major) == ("col", "row", "col")
    assert plugin.gemm_matrix_strides(a) == (1, 5, 15)


def test_strided_operand_is_neither_row_nor_col():
    a = spec((6, 4), stride=(8, 2))  # every other column of a [6, 8] tensor
    shape = plugin.GemmShape.of("mm", (a, spec((4, 3))), spec((6, 3)), plugin.Epilogue())
    assert shape.a_major == "strided"


def test_epilogue_operands_are_counted_after_the_op_inputs():
    bias, a, b, out = spec((7,)), spec((5, 3)), spec((3, 7)), spec((5, 7))
    extra = spec((5, 1), "bfloat16")
    epilogue = plugin.Epilogue((plugin.EpilogueStep("add_bias_m", 0),), (extra,))
    shape = plugin.GemmShape.of("addmm", (bias, a, b, extra), out, epilogue)
    assert (shape.a, shape.b, shape.operands) == (a, b, (extra,))
    assert shape.extras == (bias, extra)


def _mm(**overrides):
    args = dict(
        op="mm",
        inputs=(spec((5, 3)), spec((3, 7))),
        layout=spec((5, 7)),
        epilogue=plugin.Epilogue(),
    )
    args.update(overrides)
    return args


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        (dict(op="conv"), "is not one of"),
        (dict(inputs=(spec((5, 3)),)), "mm takes 2 inputs plus 0 epilogue operands, got 1"),
        (
            dict(
                epilogue=plugin.Epilogue((plugin.EpilogueStep("add_matrix", 0),), (spec((5, 7)),))
            ),
            "plus 1 epilogue operands, got 2",
        ),
        (dict(inputs=(spec((2, 5, 3)), spec((3, 7)))), "rank-2"),
        (dict(op="bmm"), "rank-3"),
        (dict(inputs=(spec((5, 3), "int32"), spec((3, 7)))), "a has dtype int32"),
        (dict(layout=spec((5, 7), "float64")), "the output has dtype float64"),
        (dict(inputs=(spec((5, 3)), spec((4, 7)))), "do not chain"),
        (dict(layout=spec((5, 8))), "do not chain"),
        (dict(epilogue=plugin.Epilogue(out_dtype="float16")), "epilogue stores float16"),
    ],
)
def test_malformed_requests_are_refused_with_the_reason(overrides, reason):
    with pytest.raises(Unsupported, match=reason):
        plugin.GemmShape.of(**_mm(**overrides))


def test_bmm_batch_mismatch_and_unbroadcastable_tensors_are_refused():
    with pytest.raises(Unsupported, match="batch sizes differ"):
        plugin.GemmShape.of(
            "bmm", (spec((2, 5, 3)), spec((3, 3, 7))), spec((2, 5, 7)), plugin.Epilogue()
        )
    with pytest.raises(Unsupported, match="the bias of shape \\(6,\\) does not broadcast"):
        plugin.GemmShape.of(
            "addmm", (spec((6,)), spec((5, 3)), spec((3, 7))), spec((5, 7)), plugin.Epilogue()
        )
    extra = spec((3, 7), "float16")
    epilogue = plugin.Epilogue((plugin.EpilogueStep("add_matrix", 0),), (extra,))
    with pytest.raises(Unsupported, match="epilogue operand 0 .* does not broadcast"):
        plugin.GemmShape.of("mm", (spec((5, 3)), spec((3, 7)), extra), spec((5, 7)), epilogue)
    bad = spec((5, 7), "int64")
    epilogue = plugin.Epilogue((plugin.EpilogueStep("add_matrix", 0),), (bad,))
    with pytest.raises(Unsupported, match="epilogue operand 0 has dtype int64"):
        plugin.GemmShape.of("mm", (spec((5, 3)), spec((3, 7)), bad), spec((5, 7)), epilogue)


def test_tf32_setting_round_trips_through_either_torch_api():
    """``set_tf32_matmuls`` and ``tf32_matmuls`` agree, and the legacy ``allow_tf32`` and
    ``torch.set_float32_matmul_precision`` are read too (reading ``allow_tf32`` itself
    raises once the new API was used)."""
    import torch

    from tilefuse import plugin

    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision  # restored as it was: "none" leaves the legacy reads working
    try:
        for enabled in (True, False):
            plugin.set_tf32_matmuls(enabled)
            assert plugin.tf32_matmuls() is enabled
        torch.set_float32_matmul_precision("high")
        assert plugin.tf32_matmuls() is True
        torch.set_float32_matmul_precision("highest")
        assert plugin.tf32_matmuls() is False
    finally:
        torch.set_float32_matmul_precision("highest")
        matmul.fp32_precision = before
    assert matmul.allow_tf32 is False  # the legacy read works again afterwards
