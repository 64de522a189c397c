"""Signature conformance is checked by calling shape, not by method names."""

from __future__ import annotations

from tilefuse import plugin
from tilefuse.testing.signatures import protocol_methods, signature_problem


class _Impl:
    def exact(self, producer, consumer):
        return None

    def star(self, *args):
        return None

    def optional_extra(self, a, b, c=1, *, d=2):
        return None

    def too_few(self, producer):
        return None

    def required_keyword(self, a, b, *, c):
        return None


def _declared(self, producer, consumer): ...


def test_compatible_shapes_pass():
    impl = _Impl()
    for name in ("exact", "star", "optional_extra"):
        assert signature_problem(getattr(impl, name), _declared) is None, name


def test_incompatible_shapes_say_why():
    impl = _Impl()
    problem = signature_problem(impl.too_few, _declared)
    assert problem is not None and "(producer)" in problem and "2 positional" in problem
    assert signature_problem(impl.required_keyword, _declared) is not None
    assert signature_problem(None, _declared) == "is NoneType, not a method"


def test_protocol_methods_are_the_declared_ones():
    names = set(protocol_methods(plugin.KernelScheduling))
    assert names == {"can_fuse_vertical", "can_fuse_horizontal", "codegen"}
    assert set(protocol_methods(plugin.DeviceBackend)) == {"availability", "load"}
