"""Unit tests are hermetic: no subprocess unless a test asks for one.

A test that drives a real program (xenstore-utils against the double) is
marked ``subprocess``; any other attempt to start a process fails loudly.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator

import pytest

from qubes_netsim.xenstored import XenStoreDouble

# The backend directory of vif12.0 as the XenStore double (domid 1) sees it.
VIF_BASE = "/local/domain/1/backend/vif/12/0"


@pytest.fixture(autouse=True)
def _no_subprocess(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("subprocess"):
        return

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"unit test started a process: {args[:1]}; mark it @pytest.mark.subprocess")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


@pytest.fixture
def xsd(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> Iterator[XenStoreDouble]:
    """A XenStore double holding vif12.0's backend keys, with the hotplug
    environment pointing at it (QubesDB unreachable); the root logger's
    handlers, which the entry point sets up, are put back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    with XenStoreDouble(os.path.join(str(tmp_path), "xs.sock"), domid=1) as double:
        monkeypatch.setenv("XENSTORED_PATH", double.path)
        monkeypatch.setenv("QUBESDB_SOCKET", os.path.join(str(tmp_path), "absent.sock"))
        monkeypatch.setenv("vif", "vif12.0")
        monkeypatch.setenv("XENBUS_PATH", "backend/vif/12/0")
        double.write(f"{VIF_BASE}/ip", "10.137.0.12")
        double.write(f"{VIF_BASE}/mac", "00:16:3e:5e:6c:0c")
        yield double
    root.handlers[:] = handlers
    root.setLevel(level)
