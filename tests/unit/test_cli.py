"""vif-route-qubes' command line: exit codes, reporting to libxl, no-ops.

These cases fail (or do nothing) before any kernel change, so they run
without root against the XenStore double.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from qubes_netsim.xenstored import XenStoreDouble
from vif_route_qubes.cli import ExitCode, main

BASE = "/local/domain/1/backend/vif/12/0"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)



@pytest.mark.parametrize("command", ["add", "remove"])
def test_add_and_remove_succeed_doing_nothing(xsd: XenStoreDouble, command: str) -> None:
    assert main([command]) == ExitCode.OK
    assert xsd.requests == []


def test_unknown_command_is_reported_to_libxl(xsd: XenStoreDouble, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["restart"]) == ExitCode.FAILURE
    assert xsd.read(f"{BASE}/hotplug-status") == b"error"
    assert xsd.read(f"{BASE}/hotplug-error") == (
        b"COMMAND: unknown command restart: expected online, offline, add or remove (or status, reconcile, watch)")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown command restart" in err[0]


def test_bad_vif_name_is_reported_with_its_key(xsd: XenStoreDouble, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("vif", "vif99999.0")
    assert main(["online"]) == ExitCode.FAILURE
    assert xsd.read(f"{BASE}/hotplug-error") == b"vif: domid 99999 in 'vif99999.0' is larger than 32752"


def test_unreachable_qubesdb_fails_online_cleanly(xsd: XenStoreDouble) -> None:
    assert main(["--timeout", "0.5", "online"]) == ExitCode.FAILURE
    assert xsd.read(f"{BASE}/hotplug-status") == b"error"
    assert b"cannot connect to QubesDB" in (xsd.read(f"{BASE}/hotplug-error") or b"")


def test_missing_xenbus_path_cannot_be_reported(xsd: XenStoreDouble, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("XENBUS_PATH")
    assert main(["online"]) == ExitCode.FAILURE
    assert "XENBUS_PATH: environment variable is missing" in capsys.readouterr().err
    assert xsd.requests == []


def test_hostile_values_are_quoted_in_the_log(xsd: XenStoreDouble, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("vif", "vif1.0\nFAKE LOG LINE")
    assert main(["online"]) == ExitCode.FAILURE
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "\\n" in err


def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "exit status:" in out and "hotplug-status=error" in out


def test_vif_arguments_are_for_status_only(xsd: XenStoreDouble) -> None:
    assert main(["online", "vif12.0"]) == ExitCode.USAGE
    assert main(["reconcile", "vif12.0"]) == ExitCode.USAGE
    assert xsd.requests == []
