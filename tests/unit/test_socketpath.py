"""The default control socket path and the CLI hint, as the CLI, `serve` and the dashboard all compute them."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy_core.socketpath import cli_hint, default_control_path, usual_places


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WSPROXY_CONTROL": "/x/c.sock", "XDG_RUNTIME_DIR": "/run/user/7"}, "/x/c.sock"),
        ({"XDG_RUNTIME_DIR": "/run/user/7"}, "/run/user/7/wsproxy/control.sock"),
        ({"WSPROXY_CONTROL": ""}, "/work/dir/.wsproxy/control.sock"),
        ({}, "/work/dir/.wsproxy/control.sock"),
    ],
)
def test_default_control_path(env: dict[str, str], expected: str) -> None:
    """`$WSPROXY_CONTROL`, else `$XDG_RUNTIME_DIR/wsproxy/control.sock`, else `./.wsproxy/control.sock`."""
    assert default_control_path(env, Path("/work/dir")) == expected


def test_cli_hint_names_the_path_only_when_it_is_not_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """At the default path `wsproxy status` is enough; elsewhere the hint carries `--control PATH`."""
    monkeypatch.setenv("WSPROXY_CONTROL", "/x/c.sock")
    assert cli_hint("/x/c.sock") == "wsproxy status"
    assert cli_hint("/tmp/wsproxy-tui-1/control.sock") == "wsproxy status --control /tmp/wsproxy-tui-1/control.sock"


def test_usual_places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default first, every default location, then the dashboard's fresh directories; no duplicates."""
    launched = tmp_path / "wsproxy-tui-abc"
    launched.mkdir()
    (launched / "control.sock").touch()
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads $TMPDIR again
    env = {"XDG_RUNTIME_DIR": "/run/user/7"}
    assert usual_places(env, Path("/w")) == [
        "/run/user/7/wsproxy/control.sock",
        "/w/.wsproxy/control.sock",
        str(launched / "control.sock"),
    ]
