"""Plugin discovery through real entry-point metadata: what a user sees in each case."""

from __future__ import annotations

import logging
import sys

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


def _forget_acme_modules():
    for name in [m for m in sys.modules if m.startswith("acme_")]:
        del sys.modules[name]


@pytest.fixture
def plugin_root(tmp_path, monkeypatch):
    """A directory on ``sys.path`` for throwaway distributions; their ``acme_*`` modules
    are forgotten before and after, since tests reuse module names."""
    _forget_acme_modules()
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    _forget_acme_modules()


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


# -- plugins that misbehave after discovery --------------------------------------------

ODD_BACKEND = """
from tilefuse import plugin

class Backend:
    info = plugin.BackendInfo(
        name="{name}", api_version=plugin.API_VERSION, device_types=("meta",),
        capabilities=frozenset({{"pointwise"}}), priority={priority},
    )
    def availability(self):
        {availability}
    def load(self):
        {load}

BACKEND = Backend()
"""

FACTORY = "lambda context: ('scheduling of {name}', context)"


def odd_backend(name, priority=5, availability="return plugin.Availability.available()",
                load=None):  # fmt: skip
    load = load or f"return {FACTORY.format(name=name)}"
    return ODD_BACKEND.format(name=name, priority=priority, availability=availability, load=load)


def two_backends(root, bad_availability=None, bad_load=None):
    """A high-priority backend ``bad`` (misbehaving as told) and a good ``fallback``."""
    bad = {}
    if bad_availability:
        bad["availability"] = bad_availability
    if bad_load:
        bad["load"] = bad_load
    make_dist(
        root,
        "acme-bad",
        {plugin.BACKENDS_GROUP: {"bad": "acme_bad:BACKEND"}},
        {"acme_bad": odd_backend("bad", priority=9, **bad)},
    )
    make_dist(
        root,
        "acme-fallback",
        {plugin.BACKENDS_GROUP: {"fallback": "acme_fallback:BACKEND"}},
        {"acme_fallback": odd_backend("fallback", priority=1)},
    )
    return Registry(source_for(root))


@pytest.fixture
def table_of(monkeypatch):
    """``tilefuse backends``'s table over a given registry."""
    from tilefuse import cli, discovery

    def table(reg):
        monkeypatch.setattr(discovery, "_default", reg)
        return cli.format_plugin_table()

    return table


@pytest.mark.parametrize(
    "answer, says",
    [
        ("return True", "availability() returned True, not a tilefuse.plugin.Availability"),
        ("return None", "availability() returned None, not a tilefuse.plugin.Availability"),
        ("raise OSError('driver gone')", "availability() raised OSError: driver gone"),
    ],
)
def test_bad_availability_is_refused_named_once_and_next_backend_owns(
    plugin_root, monkeypatch, caplog, table_of, answer, says
):
    monkeypatch.delenv("TILEFUSE_BACKENDS", raising=False)
    reg = two_backends(plugin_root, bad_availability=answer)
    with caplog.at_level(logging.WARNING, logger="tilefuse.plugins"):
        for _ in range(3):
            assert backend_selection.owner("meta", "pointwise", reg).info.name == "fallback"
        table = table_of(reg)
    refusals = [r for r in caplog.records if "refusing backend 'bad'" in r.getMessage()]
    assert len(refusals) == 1, caplog.text
    assert "from acme-bad 1.0" in refusals[0].getMessage() and says in refusals[0].getMessage()
    assert f"bad          acme-bad 1.0                     broken: {says}" in table
    assert "fallback     acme-fallback 1.0                available" in table
    monkeypatch.setenv("TILEFUSE_BACKENDS", "bad")
    with pytest.raises(PluginLoadError) as info:
        backend_selection.owner("meta", "pointwise", reg)
    assert "backend 'bad' from acme-bad 1.0 cannot be used" in str(info.value)
    assert says in str(info.value) and "pip uninstall acme-bad" in str(info.value)


def test_bad_availability_of_a_requested_backend_raises_at_once(plugin_root, monkeypatch):
    reg = two_backends(plugin_root, bad_availability="return 'yes'")
    monkeypatch.setenv("TILEFUSE_BACKENDS", "bad,fallback")
    with pytest.raises(PluginLoadError, match="availability\\(\\) returned 'yes'"):
        backend_selection.candidate_backends("meta", reg)


@pytest.mark.parametrize(
    "load, says",
    [
        ("raise ImportError('libacme.so: cannot open')", "load() raised ImportError: libacme.so"),
        ("return 42", "load() returned 42, which is not callable"),
    ],
)
def test_failed_load_passes_ownership_to_the_next_backend(
    plugin_root, monkeypatch, caplog, table_of, load, says
):
    monkeypatch.delenv("TILEFUSE_BACKENDS", raising=False)
    reg = two_backends(plugin_root, bad_load=load)
    assert backend_selection.owner("meta", "pointwise", reg).info.name == "bad"  # phase one
    with caplog.at_level(logging.WARNING, logger="tilefuse.plugins"):
        backend, factory = backend_selection.load_owner("meta", "pointwise", reg)
        assert backend.info.name == "fallback"
        assert factory("ctx") == ("scheduling of fallback", "ctx")
        again, _ = backend_selection.load_owner("meta", "pointwise", reg)
        assert again is backend
    assert caplog.text.count("refusing backend 'bad' from acme-bad 1.0") == 1
    assert says in caplog.text
    assert "broken: " + says in table_of(reg)
    assert backend_selection.owner("meta", "pointwise", reg).info.name == "fallback"


def test_failed_load_of_a_requested_backend_names_it_the_known_ones_and_the_fix(
    plugin_root, monkeypatch
):
    reg = two_backends(plugin_root, bad_load="raise RuntimeError('toolkit 3 needed')")
    monkeypatch.setenv("TILEFUSE_BACKENDS", "bad")
    with pytest.raises(PluginLoadError) as info:
        backend_selection.load_owner("meta", "pointwise", reg)
    text = str(info.value)
    assert "backend 'bad' from acme-bad 1.0 failed to load" in text
    assert "load() raised RuntimeError: toolkit 3 needed" in text
    assert "Installed backends: bad, fallback" in text
    assert "pip uninstall acme-bad" in text and "TILEFUSE_BACKENDS" in text
    with pytest.raises(PluginLoadError, match="toolkit 3 needed"):  # and stays refused
        backend_selection.load_owner("meta", "pointwise", reg)


def test_when_every_backend_fails_to_load_the_error_says_why(plugin_root, monkeypatch):
    monkeypatch.delenv("TILEFUSE_BACKENDS", raising=False)
    make_dist(
        plugin_root,
        "acme-bad",
        {plugin.BACKENDS_GROUP: {"bad": "acme_bad:BACKEND"}},
        {"acme_bad": odd_backend("bad", load="raise RuntimeError('no toolkit')")},
    )
    reg = Registry(source_for(plugin_root))
    with pytest.raises(NoBackendError, match="bad \\(load\\(\\) raised RuntimeError: no toolkit"):
        backend_selection.load_owner("meta", "pointwise", reg)


def test_malformed_backend_info_is_refused_at_discovery(plugin_root):
    source = odd_backend("odd").replace("priority=5", "priority='high'")
    make_dist(plugin_root, "acme-odd", {plugin.BACKENDS_GROUP: {"odd": "acme_odd:BACKEND"}},
              {"acme_odd": source})  # fmt: skip
    (record,) = Registry(source_for(plugin_root)).records(plugin.BACKENDS_GROUP)
    assert record.status == REFUSED
    assert record.reason == "info.priority must be an int, not 'high'"


POLICY = """
from tilefuse import plugin

class Policy:
    name = "{name}"
    api_version = plugin.API_VERSION
    def uuid(self):
        {uuid}
    def rank_fusions(self, candidates):
        return candidates
    def tiling(self, group, device):
        return None

POLICY = Policy()
"""


@pytest.mark.parametrize(
    "uuid, says",
    [
        ("raise KeyError('settings')", "uuid() raised KeyError: 'settings'"),
        ("return ''", "uuid() returned ''; it must be a non-empty str"),
        ("return 7", "uuid() returned 7; it must be a non-empty str"),
    ],
)
def test_bad_policy_uuid_is_listed_as_broken_and_refused_when_asked_for(
    plugin_root, monkeypatch, table_of, uuid, says
):
    make_dist(
        plugin_root,
        "acme-policy",
        {
            plugin.SCHEDULING_GROUP: {"bad-policy": "acme_policy:POLICY"},
            plugin.BACKENDS_GROUP: {"good": "acme_good:BACKEND"},
        },
        {
            "acme_policy": POLICY.format(name="bad-policy", uuid=uuid),
            "acme_good": backend_module(),
        },
    )
    reg = Registry(source_for(plugin_root))
    table = table_of(reg)
    assert f"bad-policy   acme-policy 1.0                  broken: {says}" in table
    assert "good         acme-policy 1.0                  available" in table
    monkeypatch.setenv("TILEFUSE_POLICY", "bad-policy")
    with pytest.raises(PluginLoadError) as info:
        backend_selection.active_policy(reg)
    assert "scheduling policy 'bad-policy' from acme-policy 1.0 cannot be used" in str(info.value)
    assert says in str(info.value)


def test_good_policy_reaches_core_checked_with_its_uuid_asked_once(plugin_root, monkeypatch):
    make_dist(
        plugin_root,
        "acme-policy",
        {plugin.SCHEDULING_GROUP: {"counted": "acme_policy:POLICY"}},
        {"acme_policy": POLICY.format(name="counted", uuid="Policy.calls += 1; return 'v1'")
         .replace("class Policy:", "class Policy:\n    calls = 0")},
    )  # fmt: skip
    reg = Registry(source_for(plugin_root))
    monkeypatch.setenv("TILEFUSE_POLICY", "counted")
    first = backend_selection.active_policy(reg)
    second = backend_selection.active_policy(reg)
    assert first is second and first.uuid() == "v1" and first.name == "counted"
    assert type(first.wrapped).calls == 1
