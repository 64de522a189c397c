"""A toy device backend for the ``meta`` device: proves registration through the API alone."""

from __future__ import annotations

from tilefuse import plugin


class ToyScheduling:
    """Fuses everything it is asked about; generates no kernels."""

    def __init__(self, context: plugin.CompileContext) -> None:
        self.context = context

    def can_fuse_vertical(self, producer, consumer) -> plugin.Verdict:
        return plugin.Verdict.yes()

    def can_fuse_horizontal(self, a, b) -> plugin.Verdict:
        return plugin.Verdict.yes()

    def codegen(self, spec: plugin.KernelSpec):
        raise NotImplementedError("the toy backend generates no kernels")


class ToyBackend:
    info = plugin.BackendInfo(
        name="toy",
        api_version=plugin.API_VERSION,
        device_types=("meta",),
        capabilities=frozenset({plugin.CAP_POINTWISE}),
        priority=1,
        description="test-only backend",
    )
    loads = 0

    def availability(self) -> plugin.Availability:
        return plugin.Availability.available("always (test plugin)")

    def load(self):
        ToyBackend.loads += 1
        return ToyScheduling


BACKEND = ToyBackend()
