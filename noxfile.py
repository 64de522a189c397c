"""Developer and CI sessions. `nox -s demo` and `nox -s tests` are the two README commands.

Every session installs with `constraints.txt`, which pins the CPU build of torch:
a looser torch requirement would download several GB of CUDA wheels.
"""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"
CONSTRAINTS = ("-c", "constraints.txt")
PACKAGES = (
    "packages/core",
    "packages/backend-triton",
    "packages/backend-cuda",
    "packages/backend-rocm",
    "packages/autotune",
)
# expecttest: torch.testing._internal (the OpInfo database of tests/opinfo) imports it.
TEST_TOOLS = ("pytest", "numpy", "hypothesis", "expecttest")
# The libraries bench/zoo.py builds its models from, so the CPU smoke of every family runs in
# CI (about 35 MB; the torch pin resolves torchvision to the release built for it). PyPI's
# torchvision is built for CUDA torch: its C++ ops do not load with the CPU build, and only
# bench.zoo.import_torchvision() makes it importable (timm and transformers import it too).
MODEL_ZOO = ("torchvision", "timm", "transformers")
# CUTLASS C++ headers for backend-cuda's nvcc compile tests. --no-deps: its Python
# dependencies (cuda-python, scipy, ...) are not needed for the headers.
CUTLASS = "nvidia-cutlass==4.2.0.0"
INTERPRETER_ENV = {"TRITON_INTERPRET": "1"}


def _install(session: nox.Session, *packages: str, editable: bool = True) -> None:
    session.install(*CONSTRAINTS, "torch")
    args = []
    for p in packages:
        args += ["-e", p] if editable else [p]
    session.install(*CONSTRAINTS, *args)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """All CPU tests; Triton kernels run through TRITON_INTERPRET=1."""
    _install(session, *PACKAGES, "tests/plugins/toy", "examples/third_party_backend")
    # core's `redis` extra: the remote cache's client (its tests start a real redis-server).
    session.install(*CONSTRAINTS, "-e", "packages/core[redis]")
    session.install(*CONSTRAINTS, *TEST_TOOLS, "pytest-timeout")
    session.install(*CONSTRAINTS, *MODEL_ZOO)
    session.install("--no-deps", CUTLASS)
    workers = os.environ.get("TILEFUSE_TEST_WORKERS")
    extra = ["-n", workers] if workers else []
    if workers:
        session.install("pytest-xdist")
    session.run(
        "pytest",
        "tests",
        "-m",
        "not gpu",
        "--timeout=900",
        *extra,
        *session.posargs,
        env=INTERPRETER_ENV,
    )


@nox.session(python=PYTHON)
def gpu(session: nox.Session) -> None:
    """The GPU subset (`-m gpu`); run on a machine with a CUDA device."""
    _install(session, *PACKAGES)
    session.install(*CONSTRAINTS, *TEST_TOOLS)
    session.install("--no-deps", CUTLASS)
    session.run("pytest", "tests", "-m", "gpu", *session.posargs)


@nox.session(python=PYTHON, name="core-alone")
def core_alone(session: nox.Session) -> None:
    """Core installed with no backend: imports, lists none, and says so when compiling."""
    _install(session, "packages/core")
    session.install(*CONSTRAINTS, "pytest")
    session.run("python", "-m", "tilefuse", "backends")
    session.run("pytest", "tests/core_alone", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff's lint rules and its formatter; either one failing fails the session."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", "--diff", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy on core's public API modules."""
    _install(session, "packages/core", "packages/autotune")
    session.install("mypy")
    session.run(
        "mypy",
        "packages/core/src/tilefuse/plugin.py",
        "packages/core/src/tilefuse/discovery.py",
        "packages/core/src/tilefuse/errors.py",
        "packages/core/src/tilefuse/config.py",
        "packages/core/src/tilefuse/backend_selection.py",
        "packages/autotune/src/tilefuse_autotune",
    )


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """Run examples/quickstart.py (turns the Triton interpreter on when no GPU is present)."""
    _install(session, *PACKAGES)
    session.install(*CONSTRAINTS, "numpy")
    session.run("tilefuse", "backends")
    session.run("python", "examples/quickstart.py")


@nox.session(python=False)
def bench(session: nox.Session) -> None:
    """GPU benchmark suite; uses the current interpreter (the GPU machine's torch)."""
    session.run("python", "bench/run.py", *session.posargs)
