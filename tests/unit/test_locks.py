"""qubesnet.locks: same keys wait for each other, different keys do not."""

from __future__ import annotations

import multiprocessing
import os
import time

import pytest

from qubesnet.errors import ApplyError
from qubesnet.locks import KeyLocks, slot

CTX = multiprocessing.get_context("fork")


def _hold(path: str, keys: list[str], ready: object, release: object) -> None:
    locks = KeyLocks(path)
    locks.acquire(keys, timeout=5)
    ready.set()  # type: ignore[attr-defined]
    release.wait(10)  # type: ignore[attr-defined]
    locks.release()


def _holder(path: str, keys: list[str]) -> tuple[multiprocessing.process.BaseProcess, object]:
    ready, release = CTX.Event(), CTX.Event()
    proc = CTX.Process(target=_hold, args=(path, keys, ready, release))
    proc.start()
    assert ready.wait(5)
    return proc, release


def test_same_key_times_out_while_held(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "locks", "hotplug.lock")
    proc, release = _holder(path, ["if:vif12.0"])
    try:
        started = time.monotonic()
        with pytest.raises(ApplyError, match=r"waited 0\.3 s"):
            KeyLocks(path).acquire(["addr:10.137.0.12", "if:vif12.0"], timeout=0.3)
        assert time.monotonic() - started < 3
    finally:
        release.set()  # type: ignore[attr-defined]
        proc.join()


def test_other_keys_do_not_wait(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "hotplug.lock")
    proc, release = _holder(path, ["if:vif12.0", "addr:10.137.0.12"])
    try:
        other = ["if:vif13.0", "addr:10.137.0.13"]
        assert {slot(k) for k in other}.isdisjoint({slot("if:vif12.0"), slot("addr:10.137.0.12")})
        locks = KeyLocks(path)
        locks.acquire(other, timeout=1)
        locks.release()
    finally:
        release.set()  # type: ignore[attr-defined]
        proc.join()


def test_lock_is_released_when_the_holder_dies(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "hotplug.lock")
    proc, _release = _holder(path, ["if:vif12.0"])
    proc.kill()
    proc.join()
    locks = KeyLocks(path)
    locks.acquire(["if:vif12.0"], timeout=2)
    locks.release()
