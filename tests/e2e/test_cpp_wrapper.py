"""The C++ wrapper (option ``cpp_wrapper``) on a CPU machine.

Triton kernels run through the interpreter here and have no cubin, so a graph with a
Triton kernel keeps the Python wrapper (one warning). What CI checks: the generated C++
of representative graphs (pointwise, reduction, a GEMM template, extern ops with tuple
results, a returned view) compiles, with fake CUDA kernels that give a ``cpp_launch``
rendered by the Triton backend's own renderer; a graph made only of extern steps is
built, loaded and run through the C++ wrapper and compared with eager; and every
fallback. Two tests run the real compiler (about 30 s each on two cores).
"""

from __future__ import annotations

import logging
import os
import threading
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import tilefuse
from tests.compile_check import assert_same
from tilefuse import plugin
from tilefuse.codegen import cpp_background, cpp_build
from tilefuse.codegen.cpp_externs import CPP_EXTERNS, CppUnsupported, render_extern_call
from tilefuse.codegen.cpp_wrapper import write_cpp_wrapper
from tilefuse.codegen.templates import TemplateKernel
from tilefuse.errors import CompileError
from tilefuse.report import collect_reports
from tilefuse_triton.cpp_launch import render_cpp_launch

pytestmark = pytest.mark.usefixtures("fresh_compile_state")


@pytest.fixture
def not_strict(monkeypatch):
    monkeypatch.setattr("tilefuse.config.strict", lambda: False)


@pytest.fixture
def no_gemm_selector(monkeypatch):
    """GEMMs run as the eager ``ExternChoice`` (what a graph gets with no autotuner)."""
    monkeypatch.setattr(
        "tilefuse.codegen.templates.why_no_selector", lambda device: "test: no selector"
    )


def _compile(fn, *args, options=None):
    with collect_reports() as reports:
        out = torch.compile(fn, backend="tilefuse", options=options)(*args)
    return out, reports


def _capture(monkeypatch) -> list[tuple[Any, dict[int, Any], Any]]:
    """Record each graph's ``(schedule, kernels, python_call)`` as the pipeline picks its
    wrapper (the Python one is kept)."""
    seen: list[tuple[Any, dict[int, Any], Any]] = []

    def capture(schedule, kernels, python_call, report=None):
        seen.append((schedule, dict(kernels), python_call))
        return python_call

    monkeypatch.setattr("tilefuse.pipeline.select_wrapper", capture)
    return seen


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "cpp_wrapper" in r.getMessage()]


class FakeCudaKernel:
    """A built Triton kernel as it is on a GPU: its launch rendered by the Triton backend
    from a (fake) cubin. Nothing here runs it."""

    def __init__(self, kernel: Any) -> None:
        self.name = kernel.name
        self.arg_names = kernel.arg_names
        self.kernel = kernel

    def cpp_launch(self) -> plugin.CppLaunch:
        k = self.kernel
        n = len(k.arg_names)
        return render_cpp_launch(
            kernel_name=f"{k.name}_triton",
            cubin=b"\x7fELF not a real cubin \x00\xff",
            signature=["*fp32"] * n + ["i32", "i32", "constexpr", "constexpr"],
            values=[None] * n + [k.xnumel, k.rnumel, k.config["XBLOCK"], k.config["RBLOCK"]],
            num_tensors=n,
            grid=k.grid[0],
            num_warps=4,
            shared=64 * 1024,  # above the static limit: the attribute call is written too
            device=0,
            scratch_params=2,
        )


def _mixed(x, w, a, b):
    """Pointwise and reduction kernels, a GEMM template, two extern ops (one with tuple
    results), a returned view and a graph constant (a tensor made from a literal)."""
    sdpa = F.scaled_dot_product_attention(a[None, None], b[None, None], a[None, None])
    scale = torch.tensor([0.5, 1.0, 2.0, -1.0, 0.0, 3.0, 0.25, 1.5])
    return F.conv2d(x, w), (a @ b).t(), F.layer_norm(a, (8,)), sdpa, b * scale


def _mixed_args():
    return (torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3), torch.randn(8, 8),
            torch.randn(8, 8))  # fmt: skip


# ---------------------------------------------------------------------------- fallbacks


def test_a_cpu_graph_keeps_the_python_wrapper_by_default(caplog):
    # The default, auto, builds C++ wrappers in the background for CUDA graphs only.
    x = torch.randn(33, 7)
    with caplog.at_level(logging.WARNING, logger="tilefuse"):
        out, reports = _compile(lambda x: (x.sin() + 1).sum(1), x)
    assert_same(out, (x.sin() + 1).sum(1))
    stats = tilefuse.stats()
    assert stats["graphs_compiled"] == 1 and stats["graphs_fallen_back"] == 0
    assert stats["cpp_wrappers"] == 0 and stats["cpp_wrapper_fallbacks"] == 0
    assert reports[0].wrapper_language == "python" and reports[0].cpp_wrapper == ""
    assert _warnings(caplog) == []
    assert tilefuse.wait_for_builds(timeout=0) and stats["artifacts_built"] == 0


def test_interpreted_triton_kernels_keep_the_python_wrapper_with_one_warning(caplog):
    # On a CPU-only machine Triton kernels run in the interpreter: no cubin to launch.
    x = torch.randn(33, 7)
    with caplog.at_level(logging.WARNING, logger="tilefuse"):
        out, reports = _compile(lambda x: (x.sin() + 1).sum(1), x, options={"cpp_wrapper": True})
    assert_same(out, (x.sin() + 1).sum(1))
    stats = tilefuse.stats()
    assert stats["graphs_compiled"] == 1 and stats["graphs_fallen_back"] == 0
    assert stats["cpp_wrappers"] == 0 and stats["cpp_wrapper_fallbacks"] == 1
    assert reports[0].wrapper_language == "python"
    (warning,) = _warnings(caplog)
    assert "Python wrapper" in warning and "has no C++ launch" in warning
    assert reports[0].kernels[0].name in warning


def test_environment_turns_it_on(monkeypatch):
    monkeypatch.setenv("TILEFUSE_CPP_WRAPPER", "on")
    _compile(lambda x: x.cos() * 2, torch.randn(5))
    assert tilefuse.stats()["cpp_wrapper_fallbacks"] == 1  # asked for, and declined here


def test_a_kernel_without_cpp_launch_is_named(monkeypatch):
    seen = _capture(monkeypatch)
    _compile(lambda x: x.exp() - 1, torch.randn(9))
    schedule, kernels, _ = seen[0]
    bare = {i: SimpleNamespace(name=k.name, arg_names=k.arg_names) for i, k in kernels.items()}
    with pytest.raises(CppUnsupported, match=f"kernel {bare[0].name} has no cpp_launch"):
        write_cpp_wrapper(schedule, bare)


def test_a_cpp_launch_that_is_not_a_cpp_launch_is_refused(monkeypatch):
    seen = _capture(monkeypatch)
    _compile(lambda x: x.exp() - 1, torch.randn(9))
    schedule, kernels, _ = seen[0]
    odd = {i: SimpleNamespace(name=k.name, arg_names=k.arg_names, cpp_launch=lambda: "int main")
           for i, k in kernels.items()}  # fmt: skip
    with pytest.raises(CppUnsupported, match="not a CppLaunch"):
        write_cpp_wrapper(schedule, odd)


def test_an_extern_op_outside_the_table_keeps_the_python_wrapper(monkeypatch, not_strict, caplog):
    # torch.linalg.det has no lowering (an extern) and no entry in CPP_EXTERNS.
    assert "aten::_linalg_det.default" not in CPP_EXTERNS
    x = torch.randn(3, 4, 4)
    with caplog.at_level(logging.WARNING, logger="tilefuse"):
        out, _ = _compile(torch.linalg.det, x, options={"cpp_wrapper": True})
    assert_same(out, torch.linalg.det(x))
    (warning,) = _warnings(caplog)
    assert "_linalg_det" in warning and "no C++ call" in warning
    assert tilefuse.stats()["cpp_wrapper_fallbacks"] == 1


def test_extern_calls_render_from_the_schema():
    from tilefuse.ir.nodes import Buffer

    x, w = (Buffer(n, None) for n in ("x", "w"))  # only the names are read
    conv = render_extern_call(
        torch.ops.aten.convolution.default,
        (x, w, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1), {},
    )  # fmt: skip
    assert conv == (
        "at::_ops::convolution::call(x, w, std::nullopt, "
        "c10::fromIntArrayRefSlow(at::IntArrayRef{1, 1}), "
        "c10::fromIntArrayRefSlow(at::IntArrayRef{0, 0}), "
        "c10::fromIntArrayRefSlow(at::IntArrayRef{1, 1}), false, "
        "c10::fromIntArrayRefSlow(at::IntArrayRef{0, 0}), c10::SymInt(int64_t(1)))"
    )
    # Omitted arguments take their schema defaults, kwargs go by name.
    addmm = render_extern_call(torch.ops.aten.addmm.default, (x, w, w), {"alpha": 2})
    assert addmm == ("at::_ops::addmm::call(x, w, w, at::Scalar(int64_t(1)), "
                     "at::Scalar(int64_t(2)))")  # fmt: skip
    cumsum = render_extern_call(torch.ops.aten.cumsum.default, (x, 1), {})
    assert cumsum == "at::_ops::cumsum::call(x, int64_t(1), std::nullopt)"
    from tilefuse.frontend.lowerings.embedding_backward import embedding_dense_backward_atomic

    own = render_extern_call(embedding_dense_backward_atomic._opoverload, (x, w, 7, -1), {})
    assert own == ("tilefuse_wrapper::embedding_dense_backward_atomic(x, w, "
                   "c10::SymInt(int64_t(7)), c10::SymInt(int64_t(-1)))")  # fmt: skip
    with pytest.raises(CppUnsupported, match="aten::sort.default has no C\\+\\+ call"):
        render_extern_call(torch.ops.aten.sort.default, (x,), {})


class _FakeLibrary:
    """A built wrapper library: ``call`` counts and runs the graph's Python wrapper."""

    def __init__(self) -> None:
        self.calls = 0

    def call(self, python_call, constants, args):
        self.calls += 1
        return python_call(args)


def _background(monkeypatch, build) -> None:
    """``auto`` mode building this CPU test's graphs, through ``build(wrapper)``."""
    monkeypatch.setattr(cpp_build, "_wants_background", lambda graph: True)
    monkeypatch.setattr(cpp_build, "build", build)


def _extern_graph(x, w, a, b):
    return F.conv2d(x, w, padding=1), torch.mm(a, b).t()


def _extern_args():
    return (torch.randn(2, 3, 9, 9), torch.randn(4, 3, 3, 3), torch.randn(7, 5),
            torch.randn(5, 6))  # fmt: skip


def test_auto_runs_python_until_the_background_build_is_loaded(monkeypatch, no_gemm_selector):
    release = threading.Event()
    library = _FakeLibrary()

    def slow_build(wrapper):
        assert "at::_ops::convolution::call(" in wrapper.source
        release.wait(60)
        return library

    _background(monkeypatch, slow_build)
    args = _extern_args()
    compiled = torch.compile(_extern_graph, backend="tilefuse")
    try:
        with collect_reports() as reports:
            assert_same(compiled(*args), _extern_graph(*args))
        assert not tilefuse.wait_for_builds(timeout=0)  # still building
        assert library.calls == 0 and reports[0].wrapper_language == "python"
        assert reports[0].cpp_wrapper  # the source is in the report from the start
        assert_same(compiled(*args), _extern_graph(*args))  # meanwhile: the Python wrapper
        assert library.calls == 0 and tilefuse.stats()["cpp_wrappers"] == 0
    finally:
        release.set()
    assert tilefuse.wait_for_builds(timeout=60)
    assert_same(compiled(*args), _extern_graph(*args))
    assert library.calls == 1 and reports[0].wrapper_language == "c++"
    stats = tilefuse.stats()
    assert stats["cpp_wrappers"] == 1 and stats["cpp_wrapper_fallbacks"] == 0


def test_a_failed_background_build_keeps_the_python_wrapper_quietly(
    monkeypatch, no_gemm_selector, caplog
):
    builds = []

    def failing_build(wrapper):
        builds.append(wrapper)
        raise CompileError("the C++ wrapper failed to compile: test")

    _background(monkeypatch, failing_build)
    args = _extern_args()
    compiled = torch.compile(_extern_graph, backend="tilefuse")
    with caplog.at_level(logging.INFO, logger="tilefuse"):
        assert_same(compiled(*args), _extern_graph(*args))
        assert tilefuse.wait_for_builds(timeout=60)
        assert_same(compiled(*args), _extern_graph(*args))
    assert len(builds) == 1
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    (info,) = [r.getMessage() for r in caplog.records if "background C++" in r.getMessage()]
    assert "keeps the Python wrapper" in info and "failed to compile: test" in info
    stats = tilefuse.stats()
    assert stats["cpp_wrappers"] == 0 and stats["cpp_wrapper_fallbacks"] == 0


def _failing_build():
    raise CompileError("test: no Python headers")


def test_builds_stop_after_failures_in_a_row_until_reset():
    tried = []

    def build():
        tried.append(1)
        _failing_build()

    for _ in range(cpp_background.MAX_FAILURES + 2):
        cpp_background.submit(cpp_background.BackgroundCppCall(print), build, "a graph")
    assert tilefuse.wait_for_builds(timeout=60)
    assert len(tried) == cpp_background.MAX_FAILURES  # the rest were not tried
    tilefuse.reset()
    cpp_background.submit(cpp_background.BackgroundCppCall(print), build, "a graph")
    assert tilefuse.wait_for_builds(timeout=60) and len(tried) == cpp_background.MAX_FAILURES + 1


def test_a_cpp_wrapper_failing_its_first_call_gives_the_graph_back_to_python(caplog):
    call = cpp_background.BackgroundCppCall(lambda args: ("python", list(args)))

    def broken(args):
        args.clear()  # what a boxed call may do before it fails
        raise RuntimeError("test: cuModuleLoadData failed")

    used = []
    call.ready(broken, lambda: used.append(1))
    with caplog.at_level(logging.INFO, logger="tilefuse"):
        assert call([1, 2]) == ("python", [1, 2])  # rerun with the saved arguments
    assert call.call is call.python_call and call.language == "python" and used == []
    assert any("failed on its first call" in r.getMessage() for r in caplog.records)


def test_a_first_cpp_call_during_a_cuda_graph_capture_runs_python(monkeypatch):
    call = cpp_background.BackgroundCppCall(lambda args: "python")
    used = []
    call.ready(lambda args: "c++", lambda: used.append(1))
    monkeypatch.setattr(cpp_background, "_capturing", lambda: True)
    assert call([]) == "python" and call.call is not call.python_call  # still to be tried
    monkeypatch.setattr(cpp_background, "_capturing", lambda: False)
    assert call([]) == "c++" and call([]) == "c++" and used == [1]


def test_no_build_thread_leaves_the_python_wrapper_and_nothing_pending(monkeypatch):
    def no_threads(self):
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(cpp_background, "_threads", [])
    monkeypatch.setattr(threading.Thread, "start", no_threads)
    call = cpp_background.BackgroundCppCall(lambda args: "python")
    cpp_background.submit(call, lambda: lambda args: "c++", "a graph")
    assert tilefuse.wait_for_builds(timeout=0) and call([]) == "python"


def test_auto_leaves_graphs_under_cuda_graphs_alone(monkeypatch):
    from tilefuse import config

    monkeypatch.setattr(cpp_build.shutil, "which", lambda name: "/usr/bin/c++")
    buffer = SimpleNamespace(layout=SimpleNamespace(device=torch.device("cuda", 0)))
    graph = SimpleNamespace(symbolic=False, buffers=[buffer])
    assert cpp_build._wants_background(graph)
    with config.overrides({"cuda_graphs": True}):  # replays run no wrapper
        assert not cpp_build._wants_background(graph)
    assert not cpp_build._wants_background(SimpleNamespace(symbolic=True, buffers=[buffer]))


def test_a_build_loaded_after_reset_swaps_but_does_not_count():
    release = threading.Event()
    call = cpp_background.BackgroundCppCall(lambda args: ("python", args))

    def build():
        release.wait(60)
        return lambda args: ("c++", args)

    cpp_background.submit(call, build, "a test graph")
    assert call([1]) == ("python", [1])
    tilefuse.reset()
    release.set()
    assert tilefuse.wait_for_builds(timeout=60)
    assert call([2]) == ("c++", [2]) and call.language == "c++"
    assert tilefuse.stats()["cpp_wrappers"] == 0


def test_a_background_build_runs_under_the_compiles_settings(monkeypatch):
    from tilefuse import config

    monkeypatch.delenv("TILEFUSE_STRICT", raising=False)
    seen = []

    def build():
        seen.append(config.strict())
        return lambda args: None

    with config.overrides({"strict": True}):
        cpp_background.submit(cpp_background.BackgroundCppCall(print), build, "a test graph")
    assert tilefuse.wait_for_builds(timeout=60) and seen == [True]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_has_no_build_pending():
    release = threading.Event()
    call = cpp_background.BackgroundCppCall(lambda args: "python")
    cpp_background.submit(call, lambda: release.wait(60) and (lambda args: "c++"), "a graph")
    try:
        pid = os.fork()
        if pid == 0:  # the child: the parent's build thread does not exist here
            ok = tilefuse.wait_for_builds(timeout=0) and call([]) == "python"
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert not tilefuse.wait_for_builds(timeout=0)  # the parent's is still running
    finally:
        release.set()
    assert tilefuse.wait_for_builds(timeout=60) and call([]) == "c++"


def test_build_failure_keeps_the_python_wrapper_with_one_warning(
    monkeypatch, not_strict, no_gemm_selector, caplog
):
    monkeypatch.setattr(cpp_build, "compiler", lambda: "false")  # a compiler that fails
    a, b = torch.randn(8, 5), torch.randn(5, 3)
    with caplog.at_level(logging.WARNING, logger="tilefuse"):
        out, reports = _compile(torch.mm, a, b, options={"cpp_wrapper": True})
    assert_same(out, a @ b)
    (warning,) = _warnings(caplog)
    assert "could not be built" in warning and "failed to compile" in warning
    stats = tilefuse.stats()
    assert stats["cpp_wrapper_fallbacks"] == 1 and stats["cpp_wrappers"] == 0
    assert stats["graphs_fallen_back"] == 0
    assert "tilefuse_wrapper::mm_into(" in reports[0].cpp_wrapper  # generated, not built


def test_build_failure_raises_in_strict_mode(monkeypatch, no_gemm_selector):
    monkeypatch.setattr(cpp_build, "compiler", lambda: "false")
    with pytest.raises(Exception, match="C\\+\\+ wrapper failed to compile"):
        _compile(torch.mm, torch.randn(8, 5), torch.randn(5, 3),
                 options={"cpp_wrapper": True, "strict": True})  # fmt: skip
    with pytest.raises(CompileError):
        cpp_build.build(cpp_build.CppWrapperSource("int x;"))


def test_bad_settings_are_clear_errors(monkeypatch):
    with pytest.raises(Exception, match="'cpp_wrapper'='yes' is invalid"):
        _compile(lambda x: x + 1, torch.randn(3), options={"cpp_wrapper": "yes"})
    monkeypatch.setenv("TILEFUSE_CPP_WRAPPER", "sometimes")
    torch._dynamo.reset()
    with pytest.raises(Exception, match="TILEFUSE_CPP_WRAPPER='sometimes' is not a setting"):
        _compile(lambda x: x + 2, torch.randn(3))


# ---------------------------------------------------------------- real compiles (two)


def test_generated_source_of_a_mixed_graph_compiles(monkeypatch, no_gemm_selector, tmp_path):
    seen = _capture(monkeypatch)
    _compile(_mixed, *_mixed_args())
    schedule, kernels, python_call = seen[0]
    fake = {
        i: k if isinstance(k, TemplateKernel) else FakeCudaKernel(k) for i, k in kernels.items()
    }
    wrapper = write_cpp_wrapper(schedule, fake)
    source = wrapper.source
    assert sorted(wrapper.kernels) == sorted(k.name for k in kernels.values()
                                             if not isinstance(k, TemplateKernel))  # fmt: skip
    assert "at::_ops::convolution::call(" in source
    assert "at::_ops::_scaled_dot_product_flash_attention_for_cpu::call(" in source
    assert "std::get<1>(" in source  # the attention's second result
    assert "tilefuse_wrapper::mm_into(buf" in source  # the GEMM no selector took
    assert ".as_strided(" in source  # the returned transpose
    assert "cuLaunchKernel" in source and "CU_FUNC_ATTRIBUTE_MAX_DYNAMIC" in source
    assert source.count("namespace tilefuse_triton_cpp {") == 1  # shared once
    assert list(schedule.graph.constants) == ["const_0"]
    assert "at::Tensor const_0 = constants[0].cast<at::Tensor>();" in source
    # The same memory plan as the Python wrapper: as many reuses and frees.
    py = write_python(schedule, kernels)
    assert source.count("reuses freed") == py.count("reuses freed")
    assert source.count(".reset();") + source.count(" = decltype(") == py.count("    del ")
    src = tmp_path / "wrapper.cpp"
    src.write_text(source)
    obj = tmp_path / "wrapper.o"
    cmd = cpp_build.compile_command(wrapper, src, obj, "tf_test_module", compile_only=True)
    cpp_build.run_compiler(cmd)
    assert obj.stat().st_size > 0


def write_python(schedule, kernels) -> str:
    from tilefuse.codegen.wrapper import write_wrapper

    return write_wrapper(schedule, kernels).source


def test_a_graph_of_extern_steps_runs_through_the_cpp_wrapper(monkeypatch, no_gemm_selector):
    """Built, loaded and run on CPU: convolution, a GEMM with a bare cast, a view output."""
    chosen: list[Any] = []
    python_calls: list[int] = []
    real = cpp_build.select_wrapper

    def spy(schedule, kernels, python_call, report=None):
        def counted(args):
            python_calls.append(1)
            return python_call(args)

        chosen.append(real(schedule, kernels, counted, report))
        return chosen[-1]

    monkeypatch.setattr("tilefuse.pipeline.select_wrapper", spy)

    def fn(x, w, a, b):
        return F.conv2d(x, w, padding=1), torch.mm(a, b).t()

    args = (torch.randn(2, 3, 9, 9), torch.randn(4, 3, 3, 3), torch.randn(7, 5),
            torch.randn(5, 6))  # fmt: skip
    compiled = torch.compile(fn, backend="tilefuse", options={"cpp_wrapper": True})
    with collect_reports() as reports:
        out = compiled(*args)
    assert_same(out, fn(*args))
    assert reports[0].wrapper_language == "c++"
    stats = tilefuse.stats()
    assert stats["cpp_wrappers"] == 1 and stats["cpp_wrapper_fallbacks"] == 0
    assert stats["artifacts_built"] == 1
    assert isinstance(chosen[0], cpp_build.CppWrapperCall)
    assert python_calls == []

    # An unaligned input: the C++ wrapper declines before doing anything and the Python
    # wrapper runs the call.
    storage = torch.randn(7 * 5 + 1)
    a_unaligned = storage[1:].view(7, 5)
    assert a_unaligned.data_ptr() % 16 != 0
    moved = (args[0], args[1], a_unaligned, args[3])
    out = compiled(*moved)
    assert_same(out, fn(*moved))
    assert python_calls == [1] and len(chosen) == 1  # the same graph, not a recompile

    # Compiled again: the verified library is loaded from the cache, not rebuilt.
    torch._dynamo.reset()
    tilefuse.reset()
    out, reports = _compile(fn, *args, options={"cpp_wrapper": True})
    assert_same(out, fn(*args))
    assert reports[0].wrapper_language == "c++"
    assert tilefuse.stats()["artifacts_built"] == 0


def test_the_atomic_embedding_gradient_runs_through_the_cpp_wrapper(monkeypatch):
    """The backward of an embedding is one extern, tilefuse's own op: the C++ wrapper
    computes it with its prelude's helper (built and run here), as the Python op does."""
    from tilefuse.frontend.lowerings import embedding_backward

    monkeypatch.setattr(embedding_backward, "ATOMIC_DEVICES", {"cuda", "cpu"})
    w = torch.randn(10, 6, requires_grad=True)
    ids = torch.tensor([[1, 3, 3, 0], [9, 0, 3, 2]])
    seed = torch.randn(2, 4, 6)

    def fn(ids, w):
        return F.embedding(ids, w, padding_idx=0)

    (fn(ids, w) * seed).sum().backward()
    expected, w.grad = w.grad, None
    compiled = torch.compile(fn, backend="tilefuse", options={"cpp_wrapper": True})
    with collect_reports() as reports:
        (compiled(ids, w) * seed).sum().backward()
    assert_same(w.grad, expected)
    backward = [r for r in reports if any("embedding" in name for name in r.externs)]
    assert [r.wrapper_language for r in backward] == ["c++"]
    assert "tilefuse_wrapper::embedding_dense_backward_atomic(" in backward[0].cpp_wrapper


def test_an_extern_result_gets_the_floating_dtype_the_graph_was_compiled_for():
    """CPU layer norm of a bfloat16 input with float32 weights: the kernel's statistics are
    float32, its meta's (what the graph was compiled for) bfloat16; the C++ wrapper
    converts them as the Python one does."""
    x = torch.randn(4, 6, 16).to(torch.bfloat16)
    w, b = torch.randn(16), torch.randn(16)

    def fn(x, w, b):
        return torch.ops.aten.native_layer_norm(x, [16], w, b, 1e-5)

    expected = fn(x, w, b)
    assert expected[1].dtype == torch.float32
    out, reports = _compile(fn, x, w, b, options={"cpp_wrapper": True})
    assert reports[0].wrapper_language == "c++"
    assert [t.dtype for t in out] == [torch.bfloat16] * 3
    for got, want in zip(out, expected):
        torch.testing.assert_close(got, want.to(got.dtype))


def test_the_vendor_bias_choice_runs_through_the_cpp_wrapper(monkeypatch):
    """cuBLASLt's fused bias (+ relu) choice (picked for a GEMM + bias on CUDA) launches
    from the C++ wrapper through ATen: built, loaded and run here on CPU tensors, the
    graph's two GEMM + bias steps given the bias and the bias + relu choice."""
    from tilefuse_autotune.extern import VendorEpilogueChoice

    real = cpp_build.select_wrapper
    chosen: list[Any] = []

    def with_vendor_choices(schedule, kernels, python_call, report=None):
        swapped = dict(kernels)
        templates = [i for i, k in kernels.items() if isinstance(k, TemplateKernel)]
        for i, relu in zip(templates, (False, True), strict=True):
            k = kernels[i]
            swapped[i] = TemplateKernel(k.name, VendorEpilogueChoice("mm", relu), "vendor",
                                        "", "")  # fmt: skip
        chosen.append(real(schedule, swapped, python_call, report))
        return chosen[-1]

    monkeypatch.setattr("tilefuse.pipeline.select_wrapper", with_vendor_choices)
    gen = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(shape, generator=gen) for shape in ((9, 12), (12, 7), (12, 5)))
    bias, bias2 = torch.randn(7, generator=gen), torch.randn(5, generator=gen)
    fn = lambda a, b, c, bias, bias2: (torch.addmm(bias, a, b), torch.addmm(bias2, a, c))  # noqa: E731
    out, reports = _compile(fn, a, b, c, bias, bias2, options={"cpp_wrapper": True})
    assert reports[0].wrapper_language == "c++"
    assert isinstance(chosen[0], cpp_build.CppWrapperCall)
    assert_same(out, (torch.addmm(bias, a, b), torch.relu(torch.addmm(bias2, a, c))))


# ------------------------------------------------------------------- template launches


def _fake_compiled(plan) -> Any:
    """What ``JITFunction.warmup`` returns for ``plan`` on a GPU, as far as the C++ launch
    reads it: Triton types each argument (an integer equal to 1 and every constexpr become
    ``"constexpr"``) and a (fake) cubin."""
    types = {}
    for i, v in enumerate(plan.values):
        if i < len(plan.tensor_args):
            types[f"p{i}"] = "*bf16"
        elif isinstance(v, bool) or i >= len(plan.values) - len(plan.constexprs) or v == 1:
            types[f"p{i}"] = "constexpr"
        else:
            types[f"p{i}"] = "i32"
    metadata = SimpleNamespace(name="triton_mm_fake", num_warps=4, shared=16384, num_ctas=1)
    return SimpleNamespace(src=SimpleNamespace(signature=types), metadata=metadata,
                           asm={"cubin": b"\x7fELF fake gemm cubin"})  # fmt: skip


class FakeTemplateChoice:
    """A template choice as on a GPU: only its ``cpp_launch`` is used."""

    def __init__(self, launch: plugin.CppLaunch) -> None:
        self.launch = launch

    def cpp_launch(self) -> plugin.CppLaunch:
        return self.launch


def _template_graph(a, b, bias, x):
    """A GEMM with a fused bias+relu epilogue (stored as (1, M, N): the template writes a
    2-D view of it), a second GEMM and a reduction after it."""
    return torch.relu((a @ b).view(1, 64, 48) + bias), (x @ b).sum(1)


def _template_args():
    bf16 = torch.bfloat16
    return (torch.randn(64, 32, dtype=bf16), torch.randn(32, 48, dtype=bf16),
            torch.randn(48, dtype=bf16), torch.randn(16, 32, dtype=bf16))  # fmt: skip


def test_triton_gemm_launch_plan_maps_choice_order_to_kernel_order():
    from tilefuse_triton.gemm import GemmConfig, render_gemm
    from tilefuse_triton.gemm.cpp_launch import launch_plan
    from tilefuse_triton.gemm.module_cache import load_module

    def spec(shape, stride):
        return plugin.TensorSpec(shape, stride, "bfloat16", "cpu")

    bias, a, b = spec((48,), (1,)), spec((64, 32), (32, 1)), spec((32, 48), (1, 32))
    out = spec((64, 48), (48, 1))
    config = GemmConfig(32, 32, 32, 1, 4, 8)
    source = render_gemm("addmm", config, plugin.Epilogue(out_dtype="bfloat16"), (bias, a, b), out)
    plan = launch_plan(load_module(source, "plan_test"), (bias, a, b), out)
    # the kernel takes a, b, out, then the bias (its epilogue operand 0)
    assert plan.tensor_args == (1, 2, 3, 0) and plan.num_tensors == 4
    assert plan.grid == (2 * 2,)
    m, n, k = plan.values[4:7]
    assert (m, n, k) == (64, 48, 32)
    assert plan.values[7:13] == (32, 1, 1, 32, 48, 1)  # a, b (column-major), out strides
    assert plan.values[13:15] == (0, 1)  # the bias broadcast over the rows
    assert plan.constexprs["EVEN_K"] is True


def test_a_launch_maps_each_pointer_to_the_tensor_it_names():
    def launch(order):
        return render_cpp_launch(kernel_name="k", cubin=b"x", signature=["*fp32"] * 3 + ["i32"],
                                 values=[None, None, None, 7], num_tensors=3, grid=1,
                                 num_warps=4, shared=0, device=0, tensor_args=order)  # fmt: skip

    text = launch([1, 2, 0]).declarations
    assert "p0 = tilefuse_triton_cpp::pointer(a1, kName)" in text
    assert "p2 = tilefuse_triton_cpp::pointer(a0, kName)" in text and "int32_t p3 = 7;" in text
    for bad in ([0, 0, 1], [0, 1], [0, 1, 3]):
        with pytest.raises(ValueError, match="tensor_args"):
            launch(bad)


def test_generated_source_with_template_launches_compiles(monkeypatch, tmp_path):
    """The Triton GEMM template's and CUTLASS's C++ launches in one graph: generated and
    compiled (fake cubin; the CUTLASS library is only named)."""
    from tilefuse_cuda.cpp_launch import render_cutlass_launch
    from tilefuse_cuda.problem import analyse
    from tilefuse_triton.gemm import TritonGemmChoice
    from tilefuse_triton.gemm.cpp_launch import launch_plan, render_gemm_launch
    from tilefuse_triton.gemm.module_cache import load_module

    monkeypatch.setenv("TILEFUSE_AUTOTUNE", "off")
    seen = _capture(monkeypatch)
    _compile(_template_graph, *_template_args())
    schedule, kernels, _ = seen[0]
    fake: dict[int, Any] = {}
    templates = 0
    for i, k in kernels.items():
        if not isinstance(k, TemplateKernel):
            fake[i] = FakeCudaKernel(k)
            continue
        op, inputs, layout, epilogue = schedule.steps[i].request()
        if isinstance(k.choice, TritonGemmChoice):  # the one with the epilogue
            choice = k.choice
            plan = launch_plan(load_module(choice.source, choice.name), inputs, layout)
            launch = render_gemm_launch(_fake_compiled(plan), plan, 0)
        else:
            problem, _ = analyse(op, inputs, layout, epilogue)
            launch = render_cutlass_launch(kernel_name="cutlass3x_fake",
                                           library="/nonexistent/kernel.so", problem=problem,
                                           inputs=inputs, layout=layout)  # fmt: skip
        assert launch is not None
        templates += 1
        fake[i] = TemplateKernel(k.name, FakeTemplateChoice(launch), "fake", "", "")
    assert templates == 2
    wrapper = write_cpp_wrapper(schedule, fake)
    source = wrapper.source
    assert source.count("namespace tilefuse_triton_cpp {") == 1
    assert source.count("namespace tilefuse_cuda_cpp {") == 1
    assert "RTLD_NOLOAD" in source and '"/nonexistent/kernel.so"' in source
    # CUTLASS's ints: M, N, K, L, then A's, B's, C's and D's (leading, batch) strides
    assert "kInts[] = {int64_t(16), int64_t(48), int64_t(32), int64_t(1), int64_t(32)" in source
    assert "mm_into(buf" not in source  # both GEMMs launch their template
    assert "_out = buf" in source and ".as_strided({64, 48}, {48, 1})" in source
    src = tmp_path / "wrapper.cpp"
    src.write_text(source)
    obj = tmp_path / "wrapper.o"
    cmd = cpp_build.compile_command(wrapper, src, obj, "tf_test_templates", compile_only=True)
    cpp_build.run_compiler(cmd)
    assert obj.stat().st_size > 0


def test_a_template_operand_at_an_unaligned_offset_is_refused(monkeypatch):
    # Template inputs arrive materialized; an epilogue operand is a window of its buffer,
    # which may start off a 16-byte boundary (moved here by hand: 1 bf16 element in).
    import dataclasses

    monkeypatch.setenv("TILEFUSE_AUTOTUNE", "off")
    seen = _capture(monkeypatch)
    _compile(_template_graph, *_template_args())
    schedule, kernels, _ = seen[0]
    launch = plugin.CppLaunch(function="launch", declarations="")
    fake: dict[int, Any] = {}
    for i, k in kernels.items():
        if isinstance(k, TemplateKernel):
            fake[i] = TemplateKernel(k.name, FakeTemplateChoice(launch), "fake", "", "")
        else:
            fake[i] = FakeCudaKernel(k)
    write_cpp_wrapper(schedule, fake)  # as compiled: aligned
    (step,) = [s for s in schedule.steps if getattr(s, "epilogue", None) is not None]
    step.epilogue.operands[0] = dataclasses.replace(step.epilogue.operands[0], offset=1)
    with pytest.raises(CppUnsupported, match="epilogue operand 0 .* not 16-byte aligned"):
        write_cpp_wrapper(schedule, fake)


def test_cpp_launch_is_asked_outside_the_compiles_fake_tensor_mode():
    """A backend may allocate real tensors to answer (Triton's warmup does); the compile
    asks from inside AOTAutograd's fake mode (the H200 run refused every Triton GEMM
    template: "Cannot access data pointer of Tensor (e.g. FakeTensor)")."""
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

    from tilefuse.codegen.cpp_wrapper import cpp_launch_of

    class Probe:
        seen: list = []

        def cpp_launch(self):
            t = torch.empty(1)
            self.seen.append(isinstance(t, FakeTensor))
            return plugin.CppLaunch(function="tf_probe", declarations="")

    with FakeTensorMode():
        launch = cpp_launch_of(Probe(), "probe")
    assert launch.function == "tf_probe" and Probe.seen == [False]


def test_no_compiler_starts_once_the_process_is_exiting(monkeypatch):
    monkeypatch.setattr(cpp_build, "_exiting", True)
    with pytest.raises(CompileError, match="process is exiting"):
        cpp_build.run_compiler(["c++", "--version"])
