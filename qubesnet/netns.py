"""Named network namespaces, as `ip netns` keeps them (/run/netns/NAME).

A namespace is created by unsharing the network namespace in a short-lived
thread (setns and unshare act on the calling thread only) and bind-mounting
that thread's namespace on /run/netns/NAME, after making /run/netns a shared
mount point as iproute2 does, so that other mount namespaces see it too.
``entered`` switches the calling thread into a namespace and back: sockets
and /proc/sys/net files opened meanwhile belong to that namespace.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from .constants import NETNS_DIR

CLONE_NEWNET = 0x40000000
MS_BIND, MS_REC, MS_SHARED = 0x1000, 0x4000, 1 << 20
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def path(name: str) -> str:
    return os.path.join(NETNS_DIR, name)


def exists(name: str) -> bool:
    return os.path.exists(path(name))


def _share_rundir() -> None:
    os.makedirs(NETNS_DIR, mode=0o755, exist_ok=True)
    target = NETNS_DIR.encode()
    if _libc.mount(b"", target, b"none", MS_SHARED | MS_REC, None) == 0:
        return
    if ctypes.get_errno() != errno.EINVAL:
        _check(-1, f"mount --make-shared {NETNS_DIR}")
    # Not a mount point yet: bind it on itself, then share it.
    _check(_libc.mount(target, target, b"none", MS_BIND | MS_REC, None), f"mount --bind {NETNS_DIR}")
    _check(_libc.mount(b"", target, b"none", MS_SHARED | MS_REC, None), f"mount --make-shared {NETNS_DIR}")


def create(name: str) -> None:
    """Create the named namespace (EEXIST if it exists)."""
    _share_rundir()
    target = path(name)
    os.close(os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444))
    failure: list[OSError] = []

    def unshare_and_bind() -> None:
        try:
            _check(_libc.unshare(CLONE_NEWNET), "unshare")
            _check(_libc.mount(b"/proc/thread-self/ns/net", target.encode(), b"none", MS_BIND, None),
                   f"mount --bind {target}")
        except OSError as exc:
            failure.append(exc)

    thread = threading.Thread(target=unshare_and_bind, name="netns-create")
    thread.start()
    thread.join()
    if failure:
        os.unlink(target)
        raise failure[0]


def delete(name: str) -> bool:
    """Delete the named namespace; False if there was none.

    Virtual devices inside it (veth) are destroyed with it; physical ones,
    such as a Xen vif, return to the initial namespace.
    """
    target = path(name)
    if not os.path.exists(target):
        return False
    _libc.umount2(target.encode(), MNT_DETACH)
    try:
        os.unlink(target)
    except FileNotFoundError:
        return False
    return True


def open_fd(name: str) -> int:
    return os.open(path(name), os.O_RDONLY | os.O_CLOEXEC)


@contextmanager
def entered(name: str) -> Iterator[int]:
    """Run the body with the calling thread inside the namespace; yields its fd."""
    saved = own_fd()
    target = open_fd(name)
    try:
        _check(_libc.setns(target, CLONE_NEWNET), f"setns {name}")
        try:
            yield target
        finally:
            _check(_libc.setns(saved, CLONE_NEWNET), "setns back")
    finally:
        os.close(target)
        os.close(saved)


def own_fd() -> int:
    """An fd of the calling thread's namespace (to move a device back here)."""
    return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
