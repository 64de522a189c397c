"""Phase one: what tilefuse reads when it lists plugins. Imports no toolkit, no torch."""

from __future__ import annotations

from tilefuse import plugin


class AcmeBackend:
    """The ``acme`` backend: pointwise and reduction kernels for CPU tensors, as C++ with
    OpenMP built by the system compiler."""

    info = plugin.BackendInfo(
        name="acme",  # must equal the entry-point name
        api_version=plugin.API_VERSION,  # a mismatch is refused with that reason
        device_types=("cpu",),  # torch device types served
        capabilities=frozenset(
            {plugin.CAP_POINTWISE, plugin.CAP_REDUCTION, plugin.CAP_SOFTMAX_SUM}
        ),
        # Below Triton's 10: where Triton serves cpu (TRITON_INTERPRET=1) it keeps it;
        # ask for this one with TILEFUSE_BACKENDS=acme.
        priority=0,
        description="example: C++/OpenMP kernels for CPU tensors, built by the system compiler",
    )

    def availability(self) -> plugin.Availability:
        # Cheap, never raises; the reason is what `tilefuse backends` shows.
        from .build import find_compiler

        compiler = find_compiler()
        if compiler is None:
            return plugin.Availability.unavailable(
                "no C++ compiler: none of g++, c++, clang++ is on PATH and $CXX is unset "
                "(install g++ with OpenMP, e.g. `apt-get install g++`)"
            )
        return plugin.Availability.available(f"C++ compiler {compiler}")

    def load(self):
        # Phase two, on first use: heavy imports (torch, sympy) are allowed here.
        from .scheduling import AcmeScheduling

        return AcmeScheduling


BACKEND = AcmeBackend()
