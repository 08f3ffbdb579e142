"""Network hooks runner: which files run, with what, and failures tolerated."""

from __future__ import annotations

import logging
import os
import stat

import pytest

from vif_route_qubes.hooks import Hooks


def _write(directory: str, name: str, body: str, executable: bool = True) -> None:
    path = os.path.join(directory, name)
    with open(path, "w") as handle:
        handle.write("#!/bin/sh\n" + body + "\n")
    if executable:
        os.chmod(path, stat.S_IRWXU)


def test_missing_directory_means_no_hooks(tmp_path: object) -> None:
    assert Hooks(os.path.join(str(tmp_path), "absent"), 5).executables() == []


def test_only_executable_regular_files_in_name_order(tmp_path: object) -> None:
    d = str(tmp_path)
    _write(d, "b", "true")
    _write(d, "a", "true")
    _write(d, "c", "true", executable=False)
    os.mkdir(os.path.join(d, "dir"))
    assert [os.path.basename(h) for h in Hooks(d, 5).executables()] == ["a", "b"]


@pytest.mark.subprocess
def test_hooks_get_the_arguments(tmp_path: object) -> None:
    d = str(tmp_path / "hooks")  # type: ignore[operator]
    os.mkdir(d)
    out = os.path.join(str(tmp_path), "out")
    _write(d, "record", f'echo "$*" >> {out}')
    Hooks(d, 5).run(["online", "vif12.0", "vif", "10.137.0.12"])
    with open(out) as handle:
        assert handle.read() == "online vif12.0 vif 10.137.0.12\n"


@pytest.mark.subprocess
def test_failing_and_hanging_hooks_are_logged(tmp_path: object, caplog: pytest.LogCaptureFixture) -> None:
    d = str(tmp_path)
    _write(d, "fails", "echo oops >&2; exit 4")
    _write(d, "hangs", "sleep 30 & sleep 30")  # a child keeps stderr open too
    with caplog.at_level(logging.WARNING):
        Hooks(d, 0.3).run(["online", "vif12.0", "vif"])
    text = caplog.text
    assert "failed with status 4 oops" in text
    assert "did not finish within 0.3 s" in text
