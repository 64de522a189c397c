"""Throwaway backends that break the contract in known ways, installed as distributions.

``broken``: an unknown capability and scheduling methods core cannot call.
``flaky``: ``availability()`` raises.
``wrong``: honours the API (it delegates to Triton) but adds one to every output.
"""

from __future__ import annotations

SOURCE = '''
from tilefuse import plugin


def _info(name, caps=("pointwise", "reduction")):
    return plugin.BackendInfo(
        name=name, api_version=plugin.API_VERSION, device_types=("cpu",),
        capabilities=frozenset(caps), priority=-100,
    )


class BrokenScheduling:
    def __init__(self, context):
        self.context = context

    def can_fuse_vertical(self, producer):
        return plugin.Verdict.yes()

    def can_fuse_horizontal(self, a, b):
        return plugin.Verdict.yes()

    def codegen(self, spec, options):  # core passes only the spec
        raise AssertionError("unreachable")


class Broken:
    info = _info("broken", ("pointwise", "reduction", "telepathy"))

    def availability(self):
        return plugin.Availability.available()

    def load(self):
        return BrokenScheduling


class Flaky:
    info = _info("flaky")

    def availability(self):
        raise RuntimeError("driver probe crashed")

    def load(self):
        raise AssertionError("never reached")


class WrongKernel:
    """Runs the real kernel, then adds one to each buffer it stores."""

    def __init__(self, kernel, stores):
        self.kernel = kernel
        self.name = kernel.name
        self.source = kernel.source
        self.arg_names = kernel.arg_names
        self.outputs = [i for i, n in enumerate(kernel.arg_names) if n in stores]

    def build(self):
        getattr(self.kernel, "build", lambda: None)()

    def __call__(self, *args):
        self.kernel(*args)
        for i in self.outputs:
            t = args[i]
            if t.dtype == t.new_empty(0, dtype=bool).dtype:
                t.logical_not_()
            else:
                t.add_(1)


class WrongScheduling:
    def __init__(self, context, inner):
        self.inner = inner(context)

    def can_fuse_vertical(self, producer, consumer):
        return self.inner.can_fuse_vertical(producer, consumer)

    def can_fuse_horizontal(self, a, b):
        return self.inner.can_fuse_horizontal(a, b)

    def codegen(self, spec):
        return WrongKernel(self.inner.codegen(spec), set(spec.stores))

    def __getattr__(self, name):  # any other Protocol method: Triton's
        return getattr(self.inner, name)


class Wrong:
    info = _info("wrong")

    def availability(self):
        return plugin.Availability.available()

    def load(self):
        from tilefuse_triton.descriptor import BACKEND

        inner = BACKEND.load()
        return lambda context: WrongScheduling(context, inner)


BROKEN, FLAKY, WRONG = Broken(), Flaky(), Wrong()
'''

ENTRY_POINTS = {
    "tilefuse.backends": {
        "broken": "acme_conformance_fakes:BROKEN",
        "flaky": "acme_conformance_fakes:FLAKY",
        "wrong": "acme_conformance_fakes:WRONG",
    }
}
MODULES = {"acme_conformance_fakes": SOURCE}
