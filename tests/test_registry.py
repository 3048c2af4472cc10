import sys

import pytest

from lib.registry import Registry


def test_register_get_and_names():
    table: Registry[int] = Registry("widget", key="model.widget")
    table.register("alpha")(1)
    table.register("beta")(2)
    assert table.get("beta") == 2 and table.names() == ["alpha", "beta"]
    table.register("alpha")(1)  # the same object again is fine
    with pytest.raises(KeyError, match="widget 'alpha' is registered twice"):
        table.register("alpha")(3)


def test_unknown_name_names_the_key_the_closest_and_all():
    table: Registry[int] = Registry("widget", key="model.widget")
    table.register("alpha")(1)
    table.register("gamma")(2)
    with pytest.raises(
        KeyError, match=r"model\.widget 'alpah'\. Did you mean 'alpha'\? Known widgets: alpha, gamma"
    ):
        table.get("alpah")
    with pytest.raises(KeyError, match=r"unknown model\.widget 'zzz'\. Known widgets"):
        table.get("zzz")


def test_modules_are_imported_on_first_lookup(tmp_path, monkeypatch):
    (tmp_path / "widget_plugin.py").write_text(
        "from tests.test_registry import PLUGINS\nPLUGINS.register('plugged')(42)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "widget_plugin", raising=False)
    PLUGINS.modules = ("widget_plugin",)
    assert "widget_plugin" not in sys.modules
    assert PLUGINS.get("plugged") == 42 and "widget_plugin" in sys.modules


PLUGINS: Registry[int] = Registry("plugin")
