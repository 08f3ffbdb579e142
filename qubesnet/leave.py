"""Leaving fast once the result is reported and the output flushed.

Two costs come after a hotplug's work is done, and neither is worth making
the toolstack wait for:

- unwinding the interpreter (modules, objects): a few milliseconds;
- closing a netfilter netlink socket after an nftables transaction: the
  kernel makes the close wait until the objects of recent transactions are
  freed, after an RCU grace period (nft_rcv_nl_event flushes nf_tables'
  destroy work on NETLINK_URELEASE): about 10 ms. (The nft binary pays it
  at its exit too, once per process.)

So the entry points keep their gateways (and their sockets) alive to the
end, and exit with os._exit; after a commit, a short-lived child inherits the
descriptors and closes them once the parent is gone, paying the kernel's
wait off the caller's critical path.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

_kept: list[object] = []
_committed = False


def keep_until_exit(obj: object) -> None:
    """Hold ``obj`` (and the sockets it owns) until the process ends."""
    _kept.append(obj)


def note_commit() -> None:
    """An nftables transaction was committed on one of our sockets."""
    global _committed
    _committed = True


def _hand_off_descriptors() -> None:
    try:
        read_end, write_end = os.pipe()
        pid = os.fork()
    except OSError:
        return  # then our own exit pays the wait: slower, not wrong
    if pid == 0:
        try:
            os.close(write_end)
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)  # never hold the caller's pipes open
            os.read(read_end, 1)  # end of file once the parent has exited
        finally:
            os._exit(0)
    os.close(read_end)  # the write end stays open until our exit


def exit_now(code: int) -> NoReturn:
    """Flush logs and output, then exit without interpreter teardown."""
    logging = sys.modules.get("logging")  # never imported here just to flush nothing
    if logging is not None:
        logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if _committed:
        _hand_off_descriptors()
    os._exit(code)
