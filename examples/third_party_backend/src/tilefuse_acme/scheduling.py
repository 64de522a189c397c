"""Phase two: fusion answers and code generation for one compiled graph."""

from __future__ import annotations

from tilefuse import plugin


class AcmeScheduling:
    """A ``plugin.KernelScheduling``; one instance per compiled graph and device."""

    def __init__(self, context: plugin.CompileContext) -> None:
        self.context = context

    def can_fuse_vertical(self, producer, consumer) -> plugin.Verdict:
        # Say no with a reason; `tilefuse explain` shows it to the user.
        if len(producer.nodes) >= 16:
            return plugin.Verdict.no("acme kernels hold at most 16 nodes")
        return plugin.Verdict.yes()

    def can_fuse_horizontal(self, a, b) -> plugin.Verdict:
        return self.can_fuse_vertical(a, b)

    def codegen(self, group) -> plugin.Kernel:
        # Render `group` (a tilefuse FusedGroup) into acme source here, compile it, and
        # return an object with `name`, `source`, `arg_names` that runs when called.
        raise NotImplementedError("the acme code generator is left to the reader")

    def codegen_template(self, template, epilogue) -> plugin.Kernel:
        raise NotImplementedError("acme has no GEMM templates")
