"""The default config and registry locations equal platformdirs' answer, which hpcbridge
computes itself on Linux so that start-up does not pay for importing platformdirs."""

from __future__ import annotations

import sys
from pathlib import Path

import platformdirs
import pytest

from hpcbridge.config import default_config_path, default_db_path


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Linux rule")
@pytest.mark.parametrize("xdg", [None, "", "/abs/xdg", "relative/xdg", " /space"])
@pytest.mark.parametrize("home", [None, "/home/someone", "relative-home"])
def test_defaults_match_platformdirs(monkeypatch: pytest.MonkeyPatch, xdg: str | None, home: str | None) -> None:
    for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME"):
        if xdg is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, xdg + ("/c" if var == "XDG_CONFIG_HOME" and xdg.startswith("/") else ""))
    if home is None:
        monkeypatch.delenv("HOME", raising=False)
    else:
        monkeypatch.setenv("HOME", home)
    assert default_config_path() == Path(platformdirs.user_config_dir("hpcbridge")) / "config.toml"
    assert default_db_path() == Path(platformdirs.user_data_dir("hpcbridge")) / "registry.db"
