"""Ownership uses the capabilities backends declare: a kernel with a reduction goes to the
best backend declaring ``reduction``, even when another one owns pointwise kernels."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
import torch

from tests.core.fake_dists import make_dist, source_for
from tilefuse import plugin
from tilefuse.codegen.kernels import Schedulings, capability_of
from tilefuse.discovery import reset_registry
from tilefuse.errors import NoBackendError

BACKEND = """
from tilefuse import plugin

class Scheduling:
    def __init__(self, context):
        self.context = context

class Backend:
    info = plugin.BackendInfo(
        name="{name}", api_version=plugin.API_VERSION, device_types=("meta",),
        capabilities=frozenset({caps!r}), priority={priority},
    )
    def availability(self):
        return plugin.Availability.available()
    def load(self):
        return Scheduling

BACKEND = Backend()
"""

POINTWISE_GROUP = SimpleNamespace(reduction=False, kind=lambda: "pointwise")
REDUCTION_GROUP = SimpleNamespace(reduction=True, kind=lambda: "reduction")
REDUCTION_NODE = SimpleNamespace(kind="reduction")
POINTWISE_NODE = SimpleNamespace(kind="pointwise")


@pytest.fixture
def install(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("TILEFUSE_BACKENDS", raising=False)

    def add(name, caps, priority):
        module = f"acme_owner_{name}"
        eps = {plugin.BACKENDS_GROUP: {name: f"{module}:BACKEND"}}
        source = BACKEND.format(name=name, caps=set(caps), priority=priority)
        make_dist(tmp_path, f"acme-owner-{name}", eps, {module: source})
        reset_registry(source_for(tmp_path))

    yield add
    reset_registry()
    for name in [m for m in sys.modules if m.startswith("acme_owner_")]:
        del sys.modules[name]


def test_capability_of_a_kernel_is_reduction_when_any_part_reduces():
    assert capability_of(POINTWISE_GROUP) == plugin.CAP_POINTWISE
    assert capability_of(POINTWISE_GROUP, POINTWISE_NODE) == plugin.CAP_POINTWISE
    assert capability_of(REDUCTION_GROUP) == plugin.CAP_REDUCTION
    assert capability_of(POINTWISE_GROUP, REDUCTION_NODE) == plugin.CAP_REDUCTION


def test_a_reduction_goes_to_the_backend_declaring_reduction(install):
    install("fast", {plugin.CAP_POINTWISE}, priority=10)
    install("full", {plugin.CAP_POINTWISE, plugin.CAP_REDUCTION}, priority=1)
    schedulings = Schedulings(None)
    meta = torch.device("meta")
    assert schedulings.for_device(meta, capability_of(POINTWISE_GROUP))[0] == "fast"
    assert schedulings.for_device(meta, capability_of(REDUCTION_GROUP))[0] == "full"


def test_one_scheduling_per_backend_when_it_owns_both(install):
    install("full", {plugin.CAP_POINTWISE, plugin.CAP_REDUCTION}, priority=1)
    schedulings = Schedulings(None)
    meta = torch.device("meta")
    pointwise = schedulings.for_device(meta, plugin.CAP_POINTWISE)[1]
    assert schedulings.for_device(meta, plugin.CAP_REDUCTION)[1] is pointwise


def test_no_backend_declaring_reduction_is_a_clear_error(install):
    install("fast", {plugin.CAP_POINTWISE}, priority=10)
    with pytest.raises(NoBackendError, match=r"'meta' \(reduction\).*fast \(no reduction"):
        Schedulings(None).for_device(torch.device("meta"), plugin.CAP_REDUCTION)
