"""What the pipeline decided for one graph: ``GraphReport``, its text form, and who sees it.

``tilefuse.pipeline`` fills one ``GraphReport`` per compiled graph and returns it as
``CompiledGraph.report``. It reaches anyone else only in two ways:

- ``collect_reports()``: a context manager yielding a list that receives the report of
  every graph compiled while the ``with`` block is active (what ``tilefuse explain``
  and the tests read); nothing is kept once no block is active;
- ``write_debug(...)``: the graph's files under ``TILEFUSE_DEBUG_DIR`` when that is set.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import config
from .codegen.kernel_cache import atomic_write
from .scheduler import ExternStep, Schedule, TemplateStep


@dataclass
class KernelReport:
    """One generated kernel: its ``backend`` (or template provider label), ``kind``
    (``pointwise``, ``reduction``, ``template:mm``...), the IR ``nodes`` it fuses, the
    buffers it ``stores``, the aten nodes they came from (``origins``) and its source."""

    name: str
    backend: str
    kind: str
    nodes: list[str]
    stores: list[str]
    origins: list[str]
    source: str


@dataclass
class GraphReport:
    """Everything the pipeline decided for graph ``graph_id``: kernels, fusions refused
    (with reasons), buffers never allocated, externs (op -> why), autotune summaries,
    the wrapper's source and, for a graph compiled for one concrete shape of a graph
    with symbolic sizes, ``specialization`` (why, and how many variants it has)."""

    graph_id: int
    kernels: list[KernelReport] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    externs: dict[str, str] = field(default_factory=dict)
    fused_away: list[str] = field(default_factory=list)
    autotune: list[str] = field(default_factory=list)
    wrapper: str = ""
    specialization: str = ""
    wrapper_language: str = "python"  # "c++" when the C++ wrapper runs the graph
    cpp_wrapper: str = ""  # the C++ wrapper's source, when one was generated

    def format(self) -> str:
        """The text ``tilefuse explain`` prints for this graph."""
        out = [f"graph {self.graph_id}: {len(self.kernels)} kernel(s), "
               f"{len(self.externs)} extern op(s)"]  # fmt: skip
        if self.specialization:
            out.append(f"  {self.specialization}")
        if self.wrapper_language != "python":
            out.append(f"  wrapper: {self.wrapper_language}")
        for k in self.kernels:
            out.append(f"  kernel {k.name} [{k.backend}, {k.kind}]: fuses {', '.join(k.nodes)}")
            out.append(f"    from aten nodes: {', '.join(k.origins)}")
            out.append(f"    writes: {', '.join(k.stores) or '(nothing)'}")
        if self.fused_away:
            out.append(f"  never allocated (fused away): {', '.join(self.fused_away)}")
        if self.refusals:
            out.append("  fusions refused:")
            out.extend(f"    {r}" for r in self.refusals)
        if self.autotune:
            out.append("  autotuning:")
            out.extend(f"    {line}" for line in self.autotune)
        if self.externs:
            out.append("  externs (eager calls):")
            out.extend(f"    {name}: {why}" for name, why in sorted(self.externs.items()))
        return "\n".join(out)


# The lists of the active ``collect_reports`` blocks. Process-wide, not per thread: a
# backward graph may compile in autograd's device thread, outside the caller's thread.
_collectors: list[list[GraphReport]] = []
_lock = threading.Lock()


@contextmanager
def collect_reports() -> Iterator[list[GraphReport]]:
    """Yield a list that receives, oldest first, the report of each graph compiled
    (in any thread) until the ``with`` block exits. Blocks may nest: each one sees
    every graph compiled while it is active."""
    reports: list[GraphReport] = []
    with _lock:
        _collectors.append(reports)
    try:
        yield reports
    finally:
        with _lock:
            # by identity: a nested block's list can equal (==) an outer one's
            index = next(i for i, c in enumerate(_collectors) if c is reports)
            del _collectors[index]


def publish(report: GraphReport) -> None:
    """Hand ``report`` to every active ``collect_reports`` block (the pipeline calls this
    once per compiled graph)."""
    with _lock:
        for reports in _collectors:
            reports.append(report)


def write_debug(graph_id: int, gm: Any, schedule: Schedule, report: GraphReport) -> None:
    """Write the aten graph, the IR, the schedule, every kernel's source and the wrapper
    under ``TILEFUSE_DEBUG_DIR/graph_NNN`` when that setting is on; else do nothing."""
    root = config.debug_dir()
    if root is None:
        return
    out = Path(root) / f"graph_{graph_id:03d}"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "aten_graph.txt", gm.print_readable(print_output=False))
    ir_lines = [repr(b) + f"  origins={b.origins}" for b in schedule.graph.buffers]
    atomic_write(out / "ir.txt", "\n".join(ir_lines) + "\n")
    steps = []
    for i, step in enumerate(schedule.steps):
        if isinstance(step, ExternStep):
            steps.append(f"{i}: extern {step.node.name} ({step.op})")
        elif isinstance(step, TemplateStep):
            ep = step.epilogue
            steps.append(f"{i}: template {step.node.name} epilogue="
                         f"{[s.kind for s in ep.steps] if ep else None}")  # fmt: skip
        else:
            steps.append(f"{i}: {step.describe()} stores={step.stores}")
    atomic_write(out / "schedule.txt", "\n".join(steps) + "\n\n" + report.format() + "\n")
    for k in report.kernels:
        atomic_write(out / f"{k.name}.py", k.source)
    atomic_write(out / "wrapper.py", report.wrapper)
