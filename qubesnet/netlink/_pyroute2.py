"""Import pyroute2's message modules without its package ``__init__``.

``import pyroute2`` (0.9.x) eagerly imports every API the library has,
asyncio included: 150-250 ms on a netvm, on every VM start. The message
classes we need (rtmsg, ndmsg, ifaddrmsg, ifinfmsg, nfgen_msg) cost a
fraction of that. So before importing them we register a stand-in package
module whose ``__path__`` is pyroute2's, which lets the import system find the
submodules without executing the package ``__init__``.

The stand-in is transparent: asking it for a public name that is not a
submodule (``from pyroute2 import IPRoute``) runs the real ``__init__`` then.

This relies on pyroute2's module layout, which tests/unit/test_netlink_loader.py
checks on every pyroute2 version setup.cfg allows (0.7.2, Debian 12, up).
"""

from __future__ import annotations

import os
import sys
import types
from importlib.machinery import PathFinder  # importlib.util costs 5 ms more


class _LazyPackage(types.ModuleType):
    _full_loaded = False

    def __getattr__(self, name: str) -> object:
        if name.startswith("__") or self._full_loaded:
            raise AttributeError(name)
        # A submodule: let the import system load it ("from pyroute2 import config").
        for entry in self.__path__:
            if os.path.exists(os.path.join(entry, name + ".py")) or os.path.isdir(
                os.path.join(entry, name)
            ):
                raise AttributeError(name)
        type(self)._full_loaded = True
        spec = self.__spec__
        assert spec is not None and spec.loader is not None
        spec.loader.exec_module(self)  # the real package __init__, run in place
        return object.__getattribute__(self, name)


def ensure_light_import() -> None:
    """Register the stand-in package unless pyroute2 is already imported."""
    if "pyroute2" in sys.modules:
        return
    spec = PathFinder.find_spec("pyroute2", sys.path)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("pyroute2 is not installed (Debian: python3-pyroute2, or pip install pyroute2)")
    package = _LazyPackage("pyroute2")
    package.__spec__ = spec
    package.__file__ = spec.origin
    package.__path__ = list(spec.submodule_search_locations)
    package.__package__ = "pyroute2"
    sys.modules["pyroute2"] = package


ensure_light_import()
