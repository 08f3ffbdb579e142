"""When qubes-setup-dnat-to-ns asks systemd-resolved at all (setup_dnat_to_ns/resolved.py).

The cheap checks before jeepney is imported: the system bus's socket and
resolved's runtime directory. The asking itself is tested against a real
dbus-daemon and a fake resolved in tests/integration/test_dnat_dns.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from setup_dnat_to_ns import resolved


@pytest.fixture
def bus_socket(tmp_path: object) -> Iterator[str]:
    path = os.path.join(str(tmp_path), "system_bus_socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    yield path
    sock.close()


@pytest.fixture
def default_bus(bus_socket: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The bus at its usual address, as the dispatcher's environment has it."""
    monkeypatch.delenv("DBUS_SYSTEM_BUS_ADDRESS", raising=False)
    monkeypatch.setattr(resolved, "DEFAULT_SYSTEM_BUS", f"unix:path={bus_socket}")
    return bus_socket


def test_no_bus_no_question(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path}/absent")
    assert resolved.may_answer() == (False, "no system bus")


def test_a_bus_without_resolved_running_is_not_asked(default_bus: str, tmp_path: object,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resolved, "RESOLVED_RUNTIME_DIR", f"{tmp_path}/resolve")
    ask, why = resolved.may_answer()
    assert not ask and "systemd-resolved is not running" in why
    assert resolved.query_dns(1.0) == (None, why)


def test_a_bus_with_resolved_running_is_asked(default_bus: str, tmp_path: object,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    os.mkdir(f"{tmp_path}/resolve")
    monkeypatch.setattr(resolved, "RESOLVED_RUNTIME_DIR", f"{tmp_path}/resolve")
    assert resolved.may_answer() == (True, "")


def test_a_bus_named_in_the_environment_is_asked(bus_socket: str, tmp_path: object,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={bus_socket}")
    monkeypatch.setattr(resolved, "RESOLVED_RUNTIME_DIR", f"{tmp_path}/resolve")
    assert resolved.may_answer() == (True, "")


@pytest.mark.subprocess
def test_jeepney_is_not_imported_when_resolved_cannot_answer(default_bus: str, tmp_path: object) -> None:
    code = (
        "import sys\n"
        "from setup_dnat_to_ns import resolved\n"
        f"resolved.DEFAULT_SYSTEM_BUS = 'unix:path={default_bus}'\n"
        f"resolved.RESOLVED_RUNTIME_DIR = '{tmp_path}/resolve'\n"
        "print(resolved.query_dns(1.0)[0], 'jeepney' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DBUS_SYSTEM_BUS_ADDRESS"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["None", "False"]
