"""Process-wide counters behind ``tilefuse.stats()``; ``tilefuse.reset()`` zeroes them.

Tests read them to prove that a graph really compiled (``graphs_compiled`` grew and
``graphs_fallen_back`` did not), and users read them to see what a program cost.
Counters are plain integers keyed by name; ``bump`` creates a name on first use.
"""

from __future__ import annotations

import threading
from collections import Counter

#: Counters that always appear in ``stats()``, zero until something happens.
STANDARD = (
    "graphs_compiled",  # graphs turned into a tilefuse wrapper
    "graphs_fallen_back",  # graphs that run eagerly (compile or first-call failure)
    "kernels_compiled",  # generated kernels made ready when their graph compiled (cached or not)
    "externs",  # extern (eager) op calls placed inside compiled graphs
    "templates",  # template (e.g. GEMM) steps selected through autotuning
    "artifacts_built",  # build_artifact builds that ran (no verified copy locally or remotely)
    "autotune_benchmarks",  # autotune selections that benchmarked their candidates
    "remote_hits",  # remote cache values found and verified (remote_cache)
    "remote_misses",  # remote cache lookups that found no usable value (absent or rejected)
    "remote_rejected",  # remote values that failed verification (also counted as misses)
    "remote_stores",  # values published to the remote cache
    "remote_errors",  # remote cache failures (unreachable, slow, refused): it is turned off
    "graphs_compiled_symbolic",  # of graphs_compiled: once for every size (symbolic sizes)
    "symbolic_fallbacks",  # symbolic-size graphs that could not be, and are specialized
    "specializations_compiled",  # shape-specialized variants compiled for symbolic-size graphs
    "specializations_evicted",  # such variants dropped (LRU, TILEFUSE_MAX_SPECIALIZATIONS)
    "cpp_wrappers",  # graphs run by a built C++ wrapper (option cpp_wrapper)
    "cpp_wrapper_fallbacks",  # graphs that asked for it and kept the Python wrapper
    "cuda_graphs_captured",  # CUDA-graph captures of compiled graphs (re-captures included)
    "cuda_graph_replays",  # calls served by replaying a captured CUDA graph
    "cuda_graph_fallbacks",  # graphs that asked for CUDA graphs and run without them
    "cuda_graphs_evicted",  # per-shape CUDA graphs of symbolic-size graphs dropped (LRU)
)

_lock = threading.Lock()
_counts: Counter[str] = Counter()


def bump(name: str, n: int = 1) -> None:
    """Add ``n`` to counter ``name``."""
    with _lock:
        _counts[name] += n


def stats() -> dict[str, int]:
    """A snapshot: every standard counter plus any other that was bumped."""
    with _lock:
        snapshot = {name: 0 for name in STANDARD}
        snapshot.update(_counts)
        return snapshot


def reset() -> None:
    """Zero every counter."""
    with _lock:
        _counts.clear()
