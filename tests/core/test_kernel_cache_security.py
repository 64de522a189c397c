"""The kernel cache runs only code it has just verified: planted ``.pyc`` files, entries swapped
after the check and planted ``.so`` files never run; shared cache directories are refused;
unreadable entries are misses that get rewritten.

Every payload writes a marker file when it runs; each test asserts the marker is absent, and
the controls show the same plant does run through the mechanisms the cache avoids.
"""

from __future__ import annotations

import ctypes
import importlib.util
import inspect
import marshal
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tilefuse.codegen import kernel_cache
from tilefuse.errors import CacheError

KIND = "security_test"
SOURCE = "def answer(x):\n    return x + 41\n"


def payload(marker: Path) -> str:
    """Python that leaves ``marker`` behind when it runs and defines a wrong ``answer``."""
    return f"open({str(marker)!r}, 'w').close()\ndef answer(x):\n    return -1\n"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("TILEFUSE_CACHE_DIR", str(root))
    monkeypatch.setattr(kernel_cache, "_stored", {})
    return root


@pytest.fixture
def module_name(request) -> str:
    """A fresh module name per test, removed from ``sys.modules`` afterwards."""
    name = f"tilefuse_security_{request.node.name}".replace("[", "_").replace("]", "")
    yield name
    sys.modules.pop(name, None)


def plant_pyc(py: Path, code_text: str) -> Path:
    """A ``__pycache__`` entry for ``py`` whose header matches its mtime and size, holding
    ``code_text``: what importlib's file loader runs instead of the source."""
    st = py.stat()
    pyc = Path(importlib.util.cache_from_source(str(py)))
    pyc.parent.mkdir(exist_ok=True)
    header = importlib.util.MAGIC_NUMBER + (0).to_bytes(4, "little")
    header += (int(st.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little")
    header += (st.st_size & 0xFFFFFFFF).to_bytes(4, "little")
    pyc.write_bytes(header + marshal.dumps(compile(code_text, str(py), "exec")))
    return pyc


# ---------------------------------------------------------------------------- source modules


def test_planted_pyc_never_runs(cache, tmp_path, module_name):
    marker = tmp_path / "pyc_ran"
    path = kernel_cache.store_source(KIND, SOURCE)
    plant_pyc(path, payload(marker))
    module = kernel_cache.load_module(path, module_name)
    assert module.answer(1) == 42 and not marker.exists()
    assert module.__file__ == str(path)
    # Control: importlib's file loader does run the planted bytecode.
    spec = importlib.util.spec_from_file_location(module_name + "_control", path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    assert marker.exists()


def test_nothing_is_written_to_pycache(cache, module_name):
    path = kernel_cache.store_source(KIND, SOURCE)
    kernel_cache.load_module(path, module_name)
    assert not (path.parent / "__pycache__").exists()


def test_entry_swapped_after_store_never_runs_and_is_repaired(cache, tmp_path, module_name):
    marker = tmp_path / "swap_ran"
    path = kernel_cache.store_source(KIND, SOURCE)
    original = path.read_bytes()
    # The attacker keeps the header, so only a check of the whole content catches it.
    header = original.split(b"\n", 1)[0] + b"\n"
    path.write_bytes(header + payload(marker).encode())
    module = kernel_cache.load_module(path, module_name)
    assert module.answer(1) == 42 and not marker.exists()
    assert path.read_bytes() == original


def test_entry_swapped_between_check_and_exec_never_runs(cache, tmp_path, module_name, monkeypatch):
    """The file is replaced right after the cache read it: only the bytes it checked run."""
    marker = tmp_path / "race_ran"
    path = kernel_cache.store_source(KIND, SOURCE)
    read = kernel_cache._read_bytes

    def read_then_swap(p: Path) -> bytes | None:
        data = read(p)
        if p == path:
            p.write_text(payload(marker))
        return data

    monkeypatch.setattr(kernel_cache, "_read_bytes", read_then_swap)
    module = kernel_cache.load_module(path, module_name)
    assert module.answer(1) == 42 and not marker.exists()
    # Source inspection (Triton's @jit) sees the verified text, not what the file holds now.
    assert inspect.getsource(module.answer) == SOURCE


def test_swapped_entry_this_process_never_stored_is_refused(cache, tmp_path, module_name):
    marker = tmp_path / "foreign_ran"
    path = kernel_cache.store_source(KIND, SOURCE)
    kernel_cache._stored.clear()  # as in a process that only finds the file
    path.write_text(payload(marker))
    with pytest.raises(CacheError, match="does not match its key"):
        kernel_cache.load_module(path, module_name)
    assert not marker.exists() and module_name not in sys.modules


def test_source_inspection_and_tracebacks_see_the_verified_text(cache, module_name):
    source = "def boom():\n    raise ValueError('from the cache')\n"
    path = kernel_cache.store_source(KIND, source)
    module = kernel_cache.load_module(path, module_name)
    assert inspect.getsource(module.boom) == source
    with pytest.raises(ValueError) as info:
        module.boom()
    frame = info.traceback[-1]
    assert str(frame.path) == str(path) and "from the cache" in str(frame.statement)


def test_generated_code_does_not_inherit_future_flags(cache, module_name):
    """``kernel_cache`` uses ``from __future__ import annotations``; kernels must not."""
    path = kernel_cache.store_source(KIND, "def f(x: int) -> int:\n    return x\n")
    module = kernel_cache.load_module(path, module_name)
    assert module.f.__annotations__ == {"x": int, "return": int}


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: b"\xff\xfe\x00" + data[3:], id="non_utf8"),
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(lambda data: data.replace(b"41", b"40"), id="wrong_hash"),
        pytest.param(lambda data: b"", id="empty"),
    ],
)
def test_unreadable_entry_is_a_miss_and_rewritten(cache, module_name, damage):
    path = kernel_cache.store_source(KIND, SOURCE)
    good = path.read_bytes()
    path.write_bytes(damage(good))
    assert kernel_cache.store_source(KIND, SOURCE) == path
    assert path.read_bytes() == good
    assert kernel_cache.load_module(path, module_name).answer(1) == 42


def test_entry_that_cannot_be_read_is_rewritten(cache, monkeypatch):
    path = kernel_cache.store_source(KIND, SOURCE)
    good = path.read_bytes()
    path.write_bytes(b"junk")
    real = Path.read_bytes
    failed = []

    def denied(self: Path) -> bytes:
        if self == path and not failed:
            failed.append(self)
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    kernel_cache.store_source(KIND, SOURCE)
    assert failed and real(path) == good


# ---------------------------------------------------------------------------- directories


def test_cache_dirs_are_private(cache):
    kernel_cache.store_source(KIND, SOURCE)
    for folder in (cache, cache / KIND):
        assert folder.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("which", ["root", "kind"])
@pytest.mark.parametrize("mode", [0o777, 0o770, 0o757])
def test_cache_dir_writable_by_others_is_refused(cache, which, mode, tmp_path):
    cache.mkdir(mode=0o700)
    folder = cache if which == "root" else cache / KIND
    folder.mkdir(exist_ok=True)
    folder.chmod(mode)
    marker = tmp_path / "never"
    with pytest.raises(CacheError, match=r"writable by group or others") as info:
        kernel_cache.store_source(KIND, payload(marker))
    assert f"chmod go-w {folder}" in str(info.value) and "TILEFUSE_CACHE_DIR" in str(info.value)
    folder.chmod(0o755)  # the fix the message names
    kernel_cache.store_source(KIND, SOURCE)


def test_cache_dir_owned_by_another_user_is_refused(tmp_path, monkeypatch):
    if os.getuid() == 0:
        foreign = tmp_path / "foreign"
        foreign.mkdir(mode=0o755)
        os.chown(foreign, 12345, -1)
    else:
        foreign = Path("/")  # owned by root, and we are not root
    monkeypatch.setenv("TILEFUSE_CACHE_DIR", str(foreign))
    with pytest.raises(CacheError, match=r"owned by uid \d+, not by you") as info:
        kernel_cache.store_source(KIND, SOURCE)
    assert "TILEFUSE_CACHE_DIR" in str(info.value)


def test_artifact_cache_checks_directories_too(cache):
    cache.mkdir()
    cache.chmod(0o777)
    with pytest.raises(CacheError, match="chmod go-w"):
        kernel_cache.build_artifact(KIND, "ab" * 32, "kernel.so", lambda entry, out: None)


# ---------------------------------------------------------------------------- built artifacts


def test_artifact_is_built_once_then_served_from_the_record(cache):
    builds = []

    def build(entry: Path, out: Path) -> None:
        builds.append(out)
        (entry / "kernel.src").write_text("input")
        out.write_bytes(b"artifact")

    key = "cd" * 32
    first = kernel_cache.build_artifact(KIND, key, "kernel.so", build)
    again = kernel_cache.build_artifact(KIND, key, "kernel.so", build)
    assert first == again == cache / KIND / "cd" / key / "kernel.so"
    assert len(builds) == 1 and first.read_bytes() == b"artifact"
    assert builds[0].suffix == ".so" and not builds[0].exists()
    record = first.with_name("kernel.so.sha256").read_text().strip()
    assert record == kernel_cache.file_sha256(first)


@pytest.mark.parametrize("plant", ["no_record", "tampered", "record_only"])
def test_unverified_artifact_is_rebuilt(cache, plant):
    key = "ef" * 32
    entry = cache / KIND / "ef" / key
    built = []

    def build(entry: Path, out: Path) -> None:
        built.append(out)
        out.write_bytes(b"genuine")

    if plant == "no_record":
        entry.mkdir(parents=True)
        (entry / "kernel.so").write_bytes(b"planted")
    else:
        kernel_cache.build_artifact(KIND, key, "kernel.so", build)
        if plant == "tampered":
            (entry / "kernel.so").write_bytes(b"planted")
        else:
            (entry / "kernel.so").unlink()
    built.clear()
    path = kernel_cache.build_artifact(KIND, key, "kernel.so", build)
    assert len(built) == 1 and path.read_bytes() == b"genuine"
    assert kernel_cache.verified_artifact(path)


def test_failed_build_publishes_nothing(cache):
    key = "12" * 32

    def build(entry: Path, out: Path) -> None:
        out.write_bytes(b"half")
        raise RuntimeError("compiler failed")

    with pytest.raises(RuntimeError, match="compiler failed"):
        kernel_cache.build_artifact(KIND, key, "kernel.so", build)
    entry = cache / KIND / "12" / key
    assert sorted(p.name for p in entry.iterdir()) == [".lock"]


def test_bad_key_or_file_name_is_refused(cache):
    with pytest.raises(ValueError, match="hex"):
        kernel_cache.build_artifact(KIND, "../../etc", "kernel.so", lambda e, o: None)
    with pytest.raises(ValueError, match="plain file name"):
        kernel_cache.build_artifact(KIND, "ab" * 32, "../kernel.so", lambda e, o: None)


# ---------------------------------------------------------------------------- real shared objects

needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler (cc) on PATH")


def build_so(c_source: str, out: Path) -> Path:
    src = out.with_suffix(".c")
    src.write_text(c_source)
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(out), str(src)], check=True)
    return out


GENUINE_C = "int tf_answer(void) { return 42; }\n"


def load_copy(path: Path, tmp_path: Path) -> ctypes.CDLL:
    """Load a private copy of ``path``: the tests later overwrite the cached file in place,
    and rewriting a loaded object's pages crashes the process when it exits."""
    copy = tmp_path / f"loaded_{len(list(tmp_path.glob('loaded_*')))}.so"
    shutil.copyfile(path, copy)
    return ctypes.CDLL(str(copy))


def planted_so(tmp_path: Path, marker: Path) -> Path:
    """A shared object whose constructor leaves ``marker``: it runs as soon as it is loaded."""
    return build_so(
        "#include <stdio.h>\n"
        "__attribute__((constructor)) static void planted(void) {\n"
        f'  FILE *f = fopen("{marker}", "w"); if (f) fclose(f);\n'
        "}\n"
        "int tf_answer(void) { return -1; }\n",
        tmp_path / "planted.so",
    )


def fake_compiler_run(genuine: Path, calls: list):
    """``subprocess.run`` for a compiler: copies the genuine object to the ``-o`` target."""

    def run(cmd, **kwargs):
        calls.append(cmd)
        shutil.copyfile(genuine, cmd[cmd.index("-o") + 1])
        return subprocess.CompletedProcess(cmd, 0, stdout="", stderr="")

    return run


@needs_cc
def test_planted_rocm_object_is_rebuilt_not_loaded(cache, tmp_path, monkeypatch):
    from tilefuse_rocm import compiler, toolchain

    marker = tmp_path / "so_ran"
    genuine = build_so(GENUINE_C, tmp_path / "genuine.so")
    planted = planted_so(tmp_path, marker)
    monkeypatch.setattr(toolchain, "find_hipcc", lambda: "/opt/fake/hipcc")
    monkeypatch.setattr(toolchain, "hipcc_version", lambda hipcc: "HIP version: test")
    source = "// a kernel\n"
    key = compiler.cache_key(source, "gfx90a", "HIP version: test")
    expected = cache / "rocm" / key[:2] / key / "kernel.so"
    expected.parent.mkdir(parents=True)
    shutil.copyfile(planted, expected)
    calls: list = []
    monkeypatch.setattr(compiler.subprocess, "run", fake_compiler_run(genuine, calls))
    path = compiler.compile_source(source, "gfx90a")
    assert path == expected and len(calls) == 1
    assert load_copy(path, tmp_path).tf_answer() == 42 and not marker.exists()
    # Swapped after the build: the next request rebuilds instead of returning it.
    shutil.copyfile(planted, expected)
    assert compiler.compile_source(source, "gfx90a") == expected and len(calls) == 2
    assert expected.read_bytes() == genuine.read_bytes()
    # Control: loading the planted object does run its payload.
    ctypes.CDLL(str(planted))
    assert marker.exists()


def _nvcc_reason() -> str | None:
    from tilefuse_cuda import toolchain

    try:
        toolchain.find_nvcc()
        toolchain.cutlass_headers()
        toolchain.nvcc_version()
    except toolchain.ToolchainMissing as exc:
        return str(exc)
    return None


@needs_cc
def test_planted_cuda_object_is_rebuilt_by_nvcc_not_loaded(cache, tmp_path):
    reason = _nvcc_reason()
    if reason is not None:
        pytest.skip(f"nvcc unusable: {reason}")
    from tilefuse_cuda import compiler

    marker = tmp_path / "so_ran"
    source = 'extern "C" int tf_answer() { return 42; }\n'
    key = compiler.cache_key(source)
    expected = cache / "cuda" / key[:2] / key / "kernel.so"
    expected.parent.mkdir(parents=True)
    shutil.copyfile(planted_so(tmp_path, marker), expected)
    path = compiler.compile_source(source, "answer")
    assert path == expected and (expected.parent / "nvcc.log").exists()
    assert kernel_cache.verified_artifact(path)
    assert load_copy(path, tmp_path).tf_answer() == 42 and not marker.exists()


def test_every_cache_level_is_private_under_a_permissive_umask(cache):
    """``mkdir(parents=True)`` gives parents the umask's mode; under 002 the ``<key[:2]>``
    level would be group-writable and an entry (artifact and record) could be swapped."""

    def build(entry: Path, out: Path) -> None:
        out.write_bytes(b"artifact")

    old = os.umask(0o002)
    try:
        artifact = kernel_cache.build_artifact("umaskkind", "ab" * 16, "kernel.bin", build)
    finally:
        os.umask(old)
    level = artifact.parent
    while level != cache.parent:
        assert stat.S_IMODE(level.stat().st_mode) == 0o700, level
        level = level.parent
    artifact.parent.parent.chmod(0o770)  # a shared prefix level is refused, not trusted
    with pytest.raises(CacheError, match="writable by group or others"):
        kernel_cache.build_artifact("umaskkind", "ab" * 16, "kernel.bin", build)
