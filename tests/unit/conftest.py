"""Unit tests are hermetic: no subprocess unless a test asks for one.

A test that drives a real program (xenstore-utils against the double) is
marked ``subprocess``; any other attempt to start a process fails loudly.
"""

from __future__ import annotations

import subprocess

import pytest


@pytest.fixture(autouse=True)
def _no_subprocess(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("subprocess"):
        return

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"unit test started a process: {args[:1]}; mark it @pytest.mark.subprocess")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
