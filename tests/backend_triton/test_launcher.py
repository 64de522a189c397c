"""``CubinLauncher``: which kernels it takes, how it packs their parameters, and (on a GPU)
that its launches compute what Triton's own launch path computes."""

from __future__ import annotations

import ctypes
from types import SimpleNamespace

import pytest
import torch

from tilefuse_triton import launcher as L

SIGNATURE = {
    "in_ptr0": "*bf16",
    "out_ptr0": "*fp32",
    "xnumel": "i32",
    "rnumel": "constexpr",  # an int equal to 1, specialized by Triton
    "XBLOCK": "constexpr",
}


def compiled(signature=None, asm=None, **metadata):
    meta = {"name": "k", "num_warps": 4, "shared": 0, "num_ctas": 1, **metadata}
    return SimpleNamespace(
        src=SimpleNamespace(signature=dict(signature or SIGNATURE)),
        metadata=SimpleNamespace(**meta),
        asm={"cubin": b"\0"} if asm is None else asm,
    )


class FakeDriver:
    """Records driver calls; a launch's parameters are read back, during the call, as the
    ctypes in ``decode``."""

    decode = (ctypes.c_uint64, ctypes.c_uint64, ctypes.c_int32, ctypes.c_uint64)

    def __init__(self, context=1):
        self.launches = []
        self.context = context  # the current context's handle; 0: none in this thread
        self.bound = []

    def cuCtxGetCurrent(self, out):
        out._obj.value = self.context
        return 0

    def cuDeviceGet(self, out, ordinal):
        out._obj.value = ordinal
        return 0

    def cuDevicePrimaryCtxRetain(self, out, device):
        out._obj.value = 100 + device.value
        return 0

    def cuCtxSetCurrent(self, context):
        self.bound.append(context.value)
        self.context = context.value
        return 0

    def cuModuleLoadData(self, module, image):
        return 0 if self.context else 201  # CUDA_ERROR_INVALID_CONTEXT

    def cuModuleGetFunction(self, function, module, name):
        return 0

    def cuFuncSetAttribute(self, function, attribute, value):
        self.attribute = (attribute, value)
        return 0

    def cuLaunchKernel(self, f, gx, gy, gz, bx, by, bz, shared, stream, params, extra):
        if not self.context:
            return 201  # CUDA_ERROR_INVALID_CONTEXT
        values = [t.from_address(params[i]).value for i, t in enumerate(self.decode[: len(params)])]
        stream = getattr(stream, "value", stream) or 0  # a c_void_p from a static entry
        self.launches.append(((gx, gy, gz), bx, shared, stream, values))
        return 0


@pytest.fixture
def driver(monkeypatch):
    fake = FakeDriver()
    monkeypatch.setattr(L, "_driver", fake)
    monkeypatch.setattr(L, "_launch_hooks_set", lambda: False)
    return fake


def test_param_types_drop_constexpr_and_specialized_arguments():
    assert L.param_types(compiled()) == ["*bf16", "*fp32", "i32"]


@pytest.mark.parametrize(
    "kernel, reason",
    [
        (compiled(asm={"hsaco": b""}), "no cubin"),
        (compiled(global_scratch_size=64), "global_scratch memory"),
        (compiled(profile_scratch_size=8), "profile_scratch memory"),
        (compiled(num_ctas=2), "clusters"),
        (compiled(signature={"d": "nvTmaDesc"}), "argument type 'nvTmaDesc'"),
    ],
)
def test_kernels_it_does_not_take_say_why(kernel, reason, monkeypatch):
    monkeypatch.setattr(L, "_launch_hooks_set", lambda: False)
    assert reason in L.unsupported_reason(kernel)
    assert L.CubinLauncher.create(kernel, ()) is None


def test_launch_hooks_keep_tritons_path(monkeypatch):
    monkeypatch.setattr(L, "_launch_hooks_set", lambda: True)
    assert "hooks" in L.unsupported_reason(compiled())


@pytest.mark.parametrize(
    "other",
    [
        lambda base: (base[1:9], base[8:16], 16, 1, 8),  # a tensor no longer 16-byte aligned
        lambda base: (base[:8], base[8:16], 9, 1, 8),  # xnumel no longer divisible by 16...
        lambda base: (base[:8], base[8:16], 1, 1, 8),  # ...or now equal to 1
        lambda base: (base[:8], base[8:16], 16, 2, 8),  # the specialized 1 changed
        lambda base: (base[:8], base[8:16], 16, 1, 16),  # another constexpr value
        lambda base: (base[:8], base[8:16], 2**31 + 16, 1, 8),  # xnumel no longer an i32
    ],
)
def test_a_call_with_other_specialization_is_refused(driver, other):
    base = torch.zeros(64)
    kernel = L.CubinLauncher.create(compiled(), (base[:8], base[8:16], 16, 1, 8))
    assert kernel((1,), 0, other(base)) is False
    assert driver.launches == []
    assert kernel((1,), 0, (base[8:16], base[16:24], 32, 1, 8)) is True


def test_parameters_are_packed_in_order_without_constexprs(driver):
    x, out = torch.zeros(32, dtype=torch.bfloat16), torch.zeros(32)
    values = (x, out, 32, 1, 128)
    kernel = L.CubinLauncher.create(compiled(global_scratch_size=0), values)
    assert kernel is not None
    assert kernel((5,), 77, values) is True
    grid, block, shared, stream, params = driver.launches[0]
    assert (grid, block, shared, stream) == ((5, 1, 1), 128, 0, 77)
    assert params == [x.data_ptr(), out.data_ptr(), 32, 0]  # 0: the global scratch pointer


def test_a_thread_without_a_context_binds_the_primary_one(driver):
    """A compile worker thread has no current context: the tensors' device's primary
    context is made current before the cubin is loaded (else error 201)."""
    driver.context = 0
    kernel = L.CubinLauncher.create(compiled(), (torch.zeros(4), torch.zeros(4), 4, 1, 4))
    assert kernel is not None
    assert driver.bound == [100 + torch.zeros(4).get_device()]
    L.CubinLauncher.create(compiled(), (torch.zeros(4), torch.zeros(4), 4, 1, 4))
    assert len(driver.bound) == 1  # a current context is left alone


def test_a_launch_from_a_thread_without_a_context_binds_it_and_launches(driver):
    """Autograd runs the backward on its own device threads, which may have no current
    context: the launch binds the primary one and is made, once."""
    values = (torch.zeros(4), torch.zeros(4), 4, 1, 4)
    kernel = L.CubinLauncher.create(compiled(), values)
    driver.context = 0  # the calling thread has none
    assert kernel((1,), 0, values) is True
    assert len(driver.launches) == 1 and len(driver.bound) == 1


def test_a_context_that_cannot_be_bound_leaves_the_launch_to_triton(driver, monkeypatch):
    values = (torch.zeros(4), torch.zeros(4), 4, 1, 4)
    kernel = L.CubinLauncher.create(compiled(), values)
    driver.context = 0
    monkeypatch.setattr(L, "_bind_context", lambda device: None)  # binding has no effect
    assert kernel((1,), 0, values) is False  # nothing launched, no exception
    assert driver.launches == []


def test_a_failing_context_bind_at_launch_leaves_the_launch_to_triton(driver, monkeypatch):
    """A driver error while binding the primary context at launch does not escape the
    launcher: nothing launched, Triton's own path takes the call."""
    values = (torch.zeros(4), torch.zeros(4), 4, 1, 4)
    kernel = L.CubinLauncher.create(compiled(), values)
    driver.context = 0
    monkeypatch.setattr(driver, "cuDevicePrimaryCtxRetain", lambda out, device: 101)
    assert kernel((1,), 0, values) is False
    assert driver.launches == []


def test_a_handle_from_another_devices_context_leaves_the_launch_to_triton(driver, monkeypatch):
    values = (torch.zeros(4), torch.zeros(4), 4, 1, 4)
    kernel = L.CubinLauncher.create(compiled(), values)
    monkeypatch.setattr(driver, "cuLaunchKernel", lambda *args: 400)  # INVALID_HANDLE
    assert kernel((1,), 0, values) is False
    monkeypatch.setattr(driver, "cuLaunchKernel", lambda *args: 700)  # ILLEGAL_ADDRESS
    with pytest.raises(RuntimeError, match="CUDA driver error 700"):
        kernel((1,), 0, values)


def test_a_static_entry_packs_the_same_parameters_as_the_general_path(driver):
    x, out = torch.zeros(32, dtype=torch.bfloat16), torch.zeros(32)
    values = (x, out, 32, 1, 128)
    kernel = L.CubinLauncher.create(compiled(), values)
    streams = []
    entry = kernel.static_entry(values, (5,), lambda device: streams.append(device) or 77)
    x2, out2 = torch.zeros(32, dtype=torch.bfloat16), torch.zeros(32)
    assert entry(x2, out2) is True
    assert streams == [x.get_device()]  # the stream of the tensors' device
    assert driver.launches == [((5, 1, 1), 128, 0, 77, [x2.data_ptr(), out2.data_ptr(), 32])]
    assert kernel((5,), 77, values) is True  # the general path packs the same way
    assert driver.launches[1][-1] == [x.data_ptr(), out.data_ptr(), 32]


def test_entries_for_other_sizes_share_a_launcher(driver):
    """A kernel of symbolic sizes keeps one entry per size on one launcher: each entry
    writes its own scalars, whatever ran in between (another entry, the general path)."""
    x, out = torch.zeros(64, dtype=torch.bfloat16), torch.zeros(64)
    small, large = (x, out, 32, 1, 128), (x, out, 48, 1, 128)
    kernel = L.CubinLauncher.create(compiled(), small)
    entry_small = kernel.static_entry(small, (1,), lambda device: 0)
    entry_large = kernel.static_entry(large, (2,), lambda device: 0)
    assert entry_large(x, out) and entry_small(x, out)
    assert kernel((3,), 0, (x, out, 64, 1, 128))
    assert entry_large(x, out)
    grids_and_sizes = [(launch[0][0], launch[-1][2]) for launch in driver.launches]
    assert grids_and_sizes == [(2, 48), (1, 32), (3, 64), (2, 48)]


def test_a_static_entry_refuses_what_its_cubin_was_not_built_for(driver):
    base = torch.zeros(64)
    values = (base[:8], base[8:16], 16, 1, 8)
    kernel = L.CubinLauncher.create(compiled(), values)
    entry = kernel.static_entry(values, (1,), lambda device: 0)
    assert entry(base[1:9], base[8:16]) is False  # no longer 16-byte aligned
    assert entry(base[:8], base[9:17]) is False
    assert driver.launches == []
    driver.context = 0  # a thread without a context: the driver refuses, nothing launched
    assert entry(base[:8], base[8:16]) is False and driver.launches == []
    # values it was not made for: no entry (the general path serves those calls)
    assert kernel.static_entry((base[:8], base[8:16], 9, 1, 8), (1,), lambda d: 0) is None
    assert kernel.static_entry((base[:8], base[8:16], 16, 1, 16), (1,), lambda d: 0) is None
    unaligned = L.CubinLauncher.create(compiled(), (base[1:9], base[8:16], 16, 1, 8))
    assert unaligned.static_entry((base[1:9], base[8:16], 16, 1, 8), (1,), lambda d: 0) is None


def test_large_shared_memory_is_opted_in(driver):
    L.CubinLauncher.create(compiled(shared=100_000), (torch.zeros(4), torch.zeros(4), 4, 1, 4))
    assert driver.attribute == (L._CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, 100_000)


@pytest.mark.gpu
@pytest.mark.parametrize("offset", [0, 1])
def test_cubin_launch_matches_triton(offset):
    """A real kernel: the cubin launch writes what Triton's launch writes; a view whose
    alignment differs from the compiled one is refused, not launched wrongly."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    import triton
    import triton.language as tl

    @triton.jit
    def scale_add(x_ptr, y_ptr, out_ptr, n, alpha, BLOCK: tl.constexpr):
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = i < n
        x = tl.load(x_ptr + i, m)
        y = tl.load(y_ptr + i, m)
        tl.store(out_ptr + i, x * alpha + y, m)

    n = 1000 + offset
    x = torch.randn(n + 1, device="cuda")[offset:]
    y = torch.randn(n, device="cuda")
    out, expected = torch.empty_like(y), torch.empty_like(y)
    grid = (triton.cdiv(n, 256),)
    scale_add[grid](x, y, expected, n, 0.5, BLOCK=256)
    kernel = scale_add.warmup(x, y, out, n, 0.5, grid=grid, BLOCK=256)
    launch = L.CubinLauncher.create(kernel, (x, y, out, n, 0.5, 256))
    assert launch is not None, L.unsupported_reason(kernel)
    stream = torch.cuda.current_stream().cuda_stream
    assert launch(grid, stream, (x, y, out, n, 0.5, 256))
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    other = torch.randn(n + 1, device="cuda")[1 - offset :]
    assert launch(grid, stream, (other, y, out, n, 0.5, 256)) is False
    entry = launch.static_entry((x, y, out, n, 0.5, 256), grid, torch._C._cuda_getCurrentRawStream)
    if offset:  # built for an unaligned view: only the general path serves it
        assert entry is None
        return
    out.zero_()
    assert entry(x, y, out)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert entry(other, y, out) is False


@pytest.mark.gpu
def test_a_launcher_made_in_a_fresh_thread_launches():
    """Compiles run in worker threads that have made no CUDA call: the launcher made there
    loads its cubin (no CUDA_ERROR_INVALID_CONTEXT) and launches from the main thread."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    import threading

    import triton
    import triton.language as tl

    @triton.jit
    def double(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tl.store(out_ptr + i, tl.load(x_ptr + i, i < n) * 2, i < n)

    x = torch.randn(300, device="cuda")
    out = torch.empty_like(x)
    made = []

    def build():
        kernel = double.warmup(x, out, 300, grid=(2,), BLOCK=256)
        made.append(L.CubinLauncher.create(kernel, (x, out, 300, 256)))

    worker = threading.Thread(target=build)
    worker.start()
    worker.join()
    assert made[0] is not None
    assert made[0]((2,), torch.cuda.current_stream().cuda_stream, (x, out, 300, 256))
    torch.testing.assert_close(out, x * 2, rtol=0, atol=0)


def test_a_symbolic_kernel_keeps_a_bounded_table_of_entries_by_size(monkeypatch):
    """``TritonKernel`` keeps one entry per size launched, at most ``MAX_SIZED_ENTRIES``,
    dropping the first kept; a size already kept keeps its entry."""
    from tilefuse_triton import scheduling

    class Launcher:
        def static_entry(self, values, grid, current_stream):
            return ("entry", values, grid)

    monkeypatch.setattr(scheduling, "MAX_SIZED_ENTRIES", 3)
    kernel = object.__new__(scheduling.TritonKernel)
    kernel._sized_entries = {}
    for n in (5, 6, 5, 7, 8):
        kernel._remember_entry((n,), Launcher(), (n, 64), (n,))
    assert list(kernel._sized_entries) == [(6,), (7,), (8,)]
    assert kernel._sized_entries[(8,)] == ("entry", (8, 64), (8,))
    monkeypatch.setattr(scheduling, "MAX_SIZED_ENTRIES", 0)
    kernel._remember_entry((9,), Launcher(), (9, 64), (9,))
    assert (9,) not in kernel._sized_entries
