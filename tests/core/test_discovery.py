"""Plugin discovery through real entry-point metadata: what a user sees in each case."""

from __future__ import annotations

import logging

import pytest

from tests.core.fake_dists import make_dist, source_for
from tilefuse import backend_selection, plugin
from tilefuse.discovery import BROKEN, CONFLICT, OK, REFUSED, Registry
from tilefuse.errors import (
    NoBackendError,
    PluginConflictError,
    PluginLoadError,
    PluginNotFoundError,
)

GOOD_BACKEND = """
from tilefuse import plugin

class Backend:
    info = plugin.BackendInfo(
        name="{name}", api_version={version}, device_types=("meta",),
        capabilities=frozenset({{"pointwise"}}), priority={priority},
    )
    def availability(self):
        return plugin.Availability.{avail}
    def load(self):
        raise AssertionError("discovery must not call load()")

BACKEND = Backend()
"""


def backend_module(name="good", version=plugin.API_VERSION, priority=5, avail="available()"):
    return GOOD_BACKEND.format(name=name, version=version, priority=priority, avail=avail)


@pytest.fixture
def plugin_root(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_good_backend_is_found_without_loading(plugin_root):
    make_dist(
        plugin_root,
        "acme-good",
        {plugin.BACKENDS_GROUP: {"good": "acme_good:BACKEND"}},
        {"acme_good": backend_module()},
    )
    reg = Registry(source_for(plugin_root))
    (record,) = reg.records(plugin.BACKENDS_GROUP)
    assert record.status == OK
    assert record.dist == "acme-good 1.0"
    assert reg.get(plugin.BACKENDS_GROUP, "good").info.priority == 5


def test_broken_import_is_logged_with_distribution_and_skipped(plugin_root, caplog):
    make_dist(
        plugin_root,
        "acme-broken",
        {plugin.BACKENDS_GROUP: {"broken": "acme_broken:BACKEND"}},
        {"acme_broken": "import a_toolkit_that_is_not_installed\n"},
    )
    reg = Registry(source_for(plugin_root))
    with caplog.at_level(logging.WARNING, logger="tilefuse.plugins"):
        records = reg.records(plugin.BACKENDS_GROUP)
    assert [r.status for r in records] == [BROKEN]
    assert reg.usable(plugin.BACKENDS_GROUP) == []
    message = caplog.text
    assert "skipping backend 'broken' from acme-broken 1.0" in message
    assert "No module named 'a_toolkit_that_is_not_installed'" in message


def test_explicit_request_of_broken_plugin_names_it_and_the_fix(plugin_root):
    make_dist(
        plugin_root,
        "acme-broken",
        {plugin.BACKENDS_GROUP: {"broken": "acme_broken:BACKEND"}},
        {"acme_broken": "raise RuntimeError('driver too old')\n"},
    )
    reg = Registry(source_for(plugin_root))
    with pytest.raises(PluginLoadError) as info:
        reg.get(plugin.BACKENDS_GROUP, "broken")
    text = str(info.value)
    assert "backend 'broken' from acme-broken 1.0 cannot be used" in text
    assert "RuntimeError: driver too old" in text
    assert "Installed: broken" in text
    assert "pip uninstall acme-broken" in text


def test_wrong_api_version_is_refused_with_that_reason(plugin_root):
    make_dist(
        plugin_root,
        "acme-old",
        {plugin.BACKENDS_GROUP: {"old": "acme_old:BACKEND"}},
        {"acme_old": backend_module(name="old", version=plugin.API_VERSION + 41)},
    )
    reg = Registry(source_for(plugin_root))
    (record,) = reg.records(plugin.BACKENDS_GROUP)
    assert record.status == REFUSED
    assert f"built for plugin API version {plugin.API_VERSION + 41}" in record.reason
    assert f"tilefuse-core speaks version {plugin.API_VERSION}" in record.reason
    with pytest.raises(PluginLoadError, match="upgrade acme-old or tilefuse-core"):
        reg.get(plugin.BACKENDS_GROUP, "old")


def test_duplicate_name_is_a_clear_error_not_a_silent_pick(plugin_root):
    for dist, module in (("acme-one", "acme_one"), ("acme-two", "acme_two")):
        make_dist(
            plugin_root,
            dist,
            {plugin.BACKENDS_GROUP: {"same": f"{module}:BACKEND"}},
            {module: backend_module(name="same")},
        )
    reg = Registry(source_for(plugin_root))
    assert {r.status for r in reg.records(plugin.BACKENDS_GROUP)} == {CONFLICT}
    assert reg.usable(plugin.BACKENDS_GROUP) == []
    with pytest.raises(PluginConflictError) as info:
        reg.get(plugin.BACKENDS_GROUP, "same")
    text = str(info.value)
    assert "claimed by acme-one 1.0 (acme_one:BACKEND) and acme-two 1.0" in text
    assert "Uninstall one" in text


def test_explicit_request_of_missing_plugin_lists_installed(plugin_root):
    make_dist(
        plugin_root,
        "acme-good",
        {plugin.BACKENDS_GROUP: {"good": "acme_good:BACKEND"}},
        {"acme_good": backend_module()},
    )
    reg = Registry(source_for(plugin_root))
    with pytest.raises(PluginNotFoundError) as info:
        reg.get(plugin.BACKENDS_GROUP, "nonesuch")
    text = str(info.value)
    assert "no backend named 'nonesuch' is installed" in text
    assert "Installed: good." in text
    assert "TILEFUSE_BACKENDS" in text


def test_name_mismatch_and_missing_methods_are_refused(plugin_root):
    make_dist(
        plugin_root,
        "acme-odd",
        {
            plugin.BACKENDS_GROUP: {"alias": "acme_odd:BACKEND"},
            plugin.SCHEDULING_GROUP: {"half": "acme_odd:HALF"},
        },
        {"acme_odd": backend_module(name="real") + "\nHALF = object()\n"},
    )
    reg = Registry(source_for(plugin_root))
    (backend,) = reg.records(plugin.BACKENDS_GROUP)
    assert "named 'alias' but the object calls itself 'real'" in backend.reason
    (policy,) = reg.records(plugin.SCHEDULING_GROUP)
    assert policy.status == REFUSED
    assert "lacks name, api_version, uuid" in policy.reason


def test_ownership_by_priority_and_availability(plugin_root, monkeypatch):
    make_dist(
        plugin_root,
        "acme-pair",
        {plugin.BACKENDS_GROUP: {"low": "acme_low:BACKEND", "high": "acme_high:BACKEND"}},
        {
            "acme_low": backend_module(name="low", priority=1),
            "acme_high": backend_module(name="high", priority=9),
        },
    )
    monkeypatch.delenv("TILEFUSE_BACKENDS", raising=False)
    reg = Registry(source_for(plugin_root))
    assert backend_selection.owner("meta", "pointwise", reg).info.name == "high"
    monkeypatch.setenv("TILEFUSE_BACKENDS", "low")
    assert backend_selection.owner("meta", "pointwise", reg).info.name == "low"
    monkeypatch.setenv("TILEFUSE_BACKENDS", "absent")
    with pytest.raises(PluginNotFoundError, match="no backend named 'absent'"):
        backend_selection.owner("meta", "pointwise", reg)


def test_no_backend_for_device_says_why_each_was_passed_over(plugin_root, monkeypatch):
    make_dist(
        plugin_root,
        "acme-off",
        {plugin.BACKENDS_GROUP: {"off": "acme_off:BACKEND"}},
        {"acme_off": backend_module(name="off", avail='unavailable("no Acme device")')},
    )
    monkeypatch.delenv("TILEFUSE_BACKENDS", raising=False)
    reg = Registry(source_for(plugin_root))
    with pytest.raises(NoBackendError) as info:
        backend_selection.owner("meta", "pointwise", reg)
    assert "no backend for device 'meta' (pointwise): off (no Acme device)" in str(info.value)
    with pytest.raises(NoBackendError, match="off \\(serves meta\\)"):
        backend_selection.owner("cpu", "pointwise", reg)
