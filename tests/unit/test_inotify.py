"""Which directories the watch follows, and what it makes of inotify's events.

Real files in a temporary directory; the kernel's event queue is replaced
only to inject what cannot be provoked safely (a queue overflow: its limit
is a host-wide sysctl).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from pytest_mock import MockerFixture

from setup_dnat_to_ns import inotify
from setup_dnat_to_ns.inotify import (
    IN_CREATE,
    IN_DELETE_SELF,
    IN_IGNORED,
    IN_Q_OVERFLOW,
    Event,
    Inotify,
    parse_events,
    plan_watches,
    symlink_chain,
)


def raw(wd: int, mask: int, name: bytes = b"") -> bytes:
    padded = name + b"\0" * (16 - len(name) % 16) if name else b""
    return struct.pack("iIII", wd, mask, 0, len(padded)) + padded


def test_parse_events_splits_records_and_strips_padding() -> None:
    data = raw(1, IN_CREATE, b"resolv.conf") + raw(-1, IN_Q_OVERFLOW) + raw(2, IN_IGNORED)
    assert parse_events(data) == [Event(1, IN_CREATE, b"resolv.conf"), Event(-1, IN_Q_OVERFLOW, b""),
                                  Event(2, IN_IGNORED, b"")]


def test_symlink_chain_follows_relative_and_absolute_links(tmp_path: Path) -> None:
    (tmp_path / "run" / "nm").mkdir(parents=True)
    (tmp_path / "etc").mkdir()
    (tmp_path / "run" / "nm" / "resolv.conf").write_text("nameserver 192.0.2.1\n")
    (tmp_path / "run" / "stub").symlink_to(tmp_path / "run" / "nm" / "resolv.conf")
    (tmp_path / "etc" / "resolv.conf").symlink_to("../run/stub")
    assert symlink_chain(str(tmp_path / "etc" / "resolv.conf")) == [
        str(tmp_path / "etc" / "resolv.conf"), str(tmp_path / "run" / "stub"),
        str(tmp_path / "run" / "nm" / "resolv.conf"),
    ]


def test_symlink_loops_end(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    assert len(symlink_chain(str(tmp_path / "a"))) == inotify.MAX_HOPS + 1


def test_plan_watches_every_hop_and_the_nearest_ancestor_of_a_missing_directory(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "resolv.conf").symlink_to(tmp_path / "run" / "nm" / "resolv.conf")  # dangling
    assert plan_watches(str(tmp_path / "etc" / "resolv.conf")) == {
        str(tmp_path / "etc"): {b"resolv.conf"},
        str(tmp_path): {b"run"},  # run/nm does not exist: wait for run to appear
    }
    (tmp_path / "run" / "nm").mkdir(parents=True)
    assert plan_watches(str(tmp_path / "etc" / "resolv.conf")) == {
        str(tmp_path / "etc"): {b"resolv.conf"},
        str(tmp_path / "run" / "nm"): {b"resolv.conf"},
    }


def test_events_on_other_names_are_not_changes(tmp_path: Path) -> None:
    (tmp_path / "resolv.conf").write_text("")
    watcher = Inotify(str(tmp_path / "resolv.conf"))
    try:
        (tmp_path / "other").write_text("x")
        assert watcher.read() is False
        (tmp_path / "resolv.conf").write_text("nameserver 192.0.2.1\n")
        assert watcher.read() is True
    finally:
        watcher.close()


def test_a_removed_directory_is_a_change_and_its_recreation_is_followed(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    path = tmp_path / "etc" / "resolv.conf"
    path.write_text("")
    watcher = Inotify(str(path))
    try:
        path.unlink()
        (tmp_path / "etc").rmdir()
        assert watcher.read() is True  # IN_DELETE, IN_DELETE_SELF, IN_IGNORED
        assert list(watcher.names.values()) == [{b"etc"}]  # now the parent, for etc's return
        (tmp_path / "etc").mkdir()
        assert watcher.read() is True
        assert list(watcher.names.values()) == [{b"resolv.conf"}]
        path.write_text("nameserver 192.0.2.1\n")
        assert watcher.read() is True
    finally:
        watcher.close()


def test_own_rm_watch_is_not_a_change() -> None:
    watcher = Inotify.__new__(Inotify)
    watcher.names = {3: {b"resolv.conf"}}
    assert watcher.classify(Event(7, IN_IGNORED, b"")) == (False, False)  # a wd we dropped ourselves
    assert watcher.classify(Event(3, IN_DELETE_SELF, b"")) == (True, False)
    assert watcher.classify(Event(3, IN_IGNORED, b"")) == (True, False)
    assert 3 not in watcher.names


@pytest.mark.parametrize("mask", [IN_Q_OVERFLOW, IN_Q_OVERFLOW | IN_IGNORED])
def test_overflow_rederives_everything(tmp_path: Path, mocker: MockerFixture, mask: int) -> None:
    (tmp_path / "resolv.conf").write_text("")
    watcher = Inotify(str(tmp_path / "resolv.conf"))
    try:
        before = dict(watcher.names)
        reads = iter([raw(-1, mask)])

        def fake_read(fd: int, size: int) -> bytes:
            try:
                return next(reads)
            except StopIteration:
                raise BlockingIOError from None

        mocker.patch("setup_dnat_to_ns.inotify.os.read", side_effect=fake_read)
        remove = mocker.spy(watcher, "_remove")
        assert watcher.read() is True
        assert remove.call_count == len(before), "every watch dropped and added again"
        mocker.stopall()
        assert list(watcher.names.values()) == list(before.values())
        (tmp_path / "resolv.conf").write_text("nameserver 192.0.2.1\n")
        assert watcher.read() is True, "still watching after the re-arm"
    finally:
        watcher.close()


def test_close_releases_the_descriptor(tmp_path: Path) -> None:
    watcher = Inotify(str(tmp_path / "resolv.conf"))
    watcher.close()
    with pytest.raises(OSError):
        os.fstat(watcher.fd)


def test_a_directory_gone_between_plan_and_watch_is_planned_again(tmp_path: Path, mocker: MockerFixture) -> None:
    """A whole tree swapped under the watch: the directory planned is
    removed before its watch is added. The plan is made again (else nothing
    would watch the path's new place), and the read counts as a change."""
    (tmp_path / "etc").mkdir()
    path = tmp_path / "etc" / "resolv.conf"
    path.write_text("")
    watcher = Inotify(str(path))
    try:
        real_add = watcher._add
        swapped: list[str] = []

        def add_after_swap(directory: str) -> int:
            if directory == str(tmp_path / "etc") and not swapped:
                swapped.append(directory)
                (tmp_path / "etc" / "resolv.conf").unlink()
                (tmp_path / "etc").rmdir()  # gone between plan_watches and the add
            return real_add(directory)

        mocker.patch.object(watcher, "_add", side_effect=add_after_swap)
        assert watcher.rearm() is True
        assert list(watcher.names.values()) == [{b"etc"}], "the parent watched for etc's return"
        mocker.stopall()
        (tmp_path / "etc").mkdir()
        assert watcher.read() is True
        path.write_text("nameserver 192.0.2.1\n")
        assert watcher.read() is True, "still watching the new tree"
    finally:
        watcher.close()
