"""Phase one: what tilefuse reads when it lists plugins. Imports no toolkit."""

from __future__ import annotations

import shutil

from tilefuse import plugin


class AcmeBackend:
    info = plugin.BackendInfo(
        name="acme",  # must equal the entry-point name
        api_version=plugin.API_VERSION,  # a mismatch is refused with that reason
        device_types=("acme",),  # torch device types served
        capabilities=frozenset({plugin.CAP_POINTWISE, plugin.CAP_REDUCTION}),
        priority=10,  # highest priority among available backends owns a node
        description="example backend for an imaginary accelerator",
    )

    def availability(self) -> plugin.Availability:
        # Cheap, never raises; the reason is what `tilefuse backends` shows.
        if shutil.which("acme-cc") is None:
            return plugin.Availability.unavailable("acme-cc compiler not found on PATH")
        return plugin.Availability.available()

    def load(self):
        # Phase two, on first use: heavy imports are allowed here.
        from .scheduling import AcmeScheduling

        return AcmeScheduling


BACKEND = AcmeBackend()
