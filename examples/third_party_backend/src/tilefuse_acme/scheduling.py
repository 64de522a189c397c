"""Phase two: fusion answers and code generation for one compiled graph."""

from __future__ import annotations

from tilefuse import plugin

from .build import CppKernel
from .render import render

MAX_KERNEL_MEMBERS = 64  # keeps one kernel's C++ small enough to compile in a second


class AcmeScheduling:
    """A ``plugin.KernelScheduling``; one instance per compiled graph and device."""

    def __init__(self, context: plugin.CompileContext) -> None:
        self.context = context

    def can_fuse_vertical(
        self, producer: plugin.FusionQuery, consumer: plugin.FusionQuery
    ) -> plugin.Verdict:
        # Say no with a reason; `tilefuse explain` shows it to the user. A FusionQuery
        # carries member names, kind and sizes: enough for a cheap answer.
        members = len(producer.names) + len(consumer.names)
        if members > MAX_KERNEL_MEMBERS:
            return plugin.Verdict.no(f"acme kernels hold at most {MAX_KERNEL_MEMBERS} members")
        return plugin.Verdict.yes()

    def can_fuse_horizontal(self, a: plugin.FusionQuery, b: plugin.FusionQuery) -> plugin.Verdict:
        return self.can_fuse_vertical(a, b)

    def codegen(self, spec: plugin.KernelSpec) -> CppKernel:
        """Render ``spec`` as C++; the returned kernel is built when core calls ``build()``.

        Raises ``Unsupported`` for a spec this backend does not render (the graph then
        runs eagerly, with one warning).
        """
        source, function, args = render(spec)
        return CppKernel(spec.name, source, function, args, self.context.cache_salt())
