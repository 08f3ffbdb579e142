"""The sysctl gateway: reads and writes under /proc/sys of this network namespace."""

from __future__ import annotations

import os

from .errors import ApplyError


class Sysctl:
    def __init__(self, root: str = "/proc/sys") -> None:
        self._root = root

    def _path(self, key: str) -> str:
        # Keys are built from validated interface names, never from raw input.
        assert ".." not in key.split("/"), key
        return os.path.join(self._root, key)

    def exists(self, key: str) -> bool:
        return os.path.exists(self._path(key))

    def read(self, key: str) -> str | None:
        try:
            with open(self._path(key), encoding="ascii") as handle:
                return handle.read().strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ApplyError(f"cannot read sysctl {key}: {exc.strerror}") from exc

    def write(self, key: str, value: str) -> None:
        try:
            with open(self._path(key), "w", encoding="ascii") as handle:
                handle.write(value)
        except OSError as exc:
            raise ApplyError(f"cannot set sysctl {key}={value}: {exc.strerror}") from exc
