"""Named network namespaces and the commands run inside them.

Commands enter a namespace with ``nsenter --net=/run/netns/NAME``, not
``ip netns exec``: the latter gives each run a private mount namespace, in
which namespaces created by the command (``ip netns add``) would not be
visible to the next one. Everything here shells out to iproute2, which makes
these helpers an oracle independent of the code under test.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

NETNS_DIR = "/run/netns"


def namespaces() -> set[str]:
    """The names of the host's named network namespaces (``ip netns list``)."""
    return set(os.listdir(NETNS_DIR)) if os.path.isdir(NETNS_DIR) else set()


def unique_prefix(tag: str = "qnsim") -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}"


def run(argv: Sequence[str], *, check: bool = True, timeout: float = 30, input_: str | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), check=check, capture_output=True, text=True, timeout=timeout, input=input_, env=env
    )


class NftError(RuntimeError):
    """The nft program failed where the oracle expected an answer."""


class Netns:
    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def path(self) -> str:
        return os.path.join(NETNS_DIR, self.name)

    def create(self) -> Netns:
        run(["ip", "netns", "add", self.name])
        self.sh("ip link set lo up")
        return self

    def delete(self) -> None:
        if os.path.exists(self.path):
            run(["ip", "netns", "delete", self.name], check=False)

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def prefix(self) -> list[str]:
        return ["nsenter", f"--net={self.path}", "--"]

    def run(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return run(self.prefix() + list(argv), **kwargs)

    def sh(self, command: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.run(["sh", "-c", command], **kwargs)

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[str]:
        return subprocess.Popen(self.prefix() + list(argv), text=True, **kwargs)

    def ip_json(self, *args: str) -> Any:
        out = self.run(["ip", "-j", *args]).stdout
        return json.loads(out) if out.strip() else []

    def nft_json(self, *args: str, allow_missing: bool = False) -> list[dict[str, Any]]:
        """``nft -j ARGS`` as a list of objects (metainfo left out).

        A failing nft raises NftError with its stderr: an oracle that read
        a failure as "nothing there" would let absence tests pass on any
        error. Only with ``allow_missing`` does an object that does not
        exist (nft's ENOENT, "No such file or directory") give ``[]``.
        """
        result = self.run(["nft", "-j", *args], check=False)
        if result.returncode != 0:
            if allow_missing and "No such file or directory" in result.stderr:
                return []
            raise NftError(f"nft -j {' '.join(args)} in {self.name} failed ({result.returncode}): "
                           f"{result.stderr.strip()}")
        return [i for i in json.loads(result.stdout).get("nftables", []) if "metainfo" not in i]

    def counter_packets(self, family: str, table: str, chain: str,
                        match: Callable[[dict[str, Any]], bool] | None = None) -> int:
        """Packets counted by the counter statements of a chain's rules; with
        ``match``, only of the rules (their JSON dicts) for which it holds."""
        total = 0
        for item in self.nft_json("list", "chain", family, table, chain):
            rule = item.get("rule")
            if rule is None or (match is not None and not match(rule)):
                continue
            for expr in rule.get("expr", []):
                if isinstance(expr.get("counter"), dict):
                    total += expr["counter"].get("packets", 0)
        return total

    def sysctl(self, key: str) -> str | None:
        result = self.run(["cat", f"/proc/sys/{key}"], check=False)
        return result.stdout.strip() if result.returncode == 0 else None

    def set_sysctl(self, key: str, value: str) -> None:
        self.sh(f"echo {value} > /proc/sys/{key}")


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it is truthy; raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
