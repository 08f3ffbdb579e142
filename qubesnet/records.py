"""Typed records of validated values, without importing ``typing`` at run time.

A record is declared as a ``typing.NamedTuple`` is::

    class Upstream(Record):
        addr: IPv4Address | IPv6Address
        origin: str

To mypy, ``Record`` *is* ``typing.NamedTuple``: every field has its
declared type. At run time it builds the same ``collections.namedtuple``
that ``typing.NamedTuple`` builds, from the class's annotations, without
loading the ``typing`` module (several milliseconds at the start of
``qubes-setup-dnat-to-ns``, which pins its imports down in
tests/unit/test_startup_imports.py). Methods and properties in the class
body are kept; fields with a default must come last.
"""

from __future__ import annotations

from collections import namedtuple
from itertools import pairwise

__all__ = ["Record"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple as Record
else:

    class _RecordMeta(type):
        def __new__(mcs, name, bases, namespace):
            if not bases:  # Record itself
                return super().__new__(mcs, name, bases, namespace)
            annotations = namespace.get("__annotations__")
            if annotations is None and "__annotate__" in namespace:  # Python 3.14 without the future import
                annotations = namespace["__annotate__"](1)
            fields = tuple(annotations or ())
            if not fields:
                raise TypeError(f"record {name} declares no fields")
            has_default = [field in namespace for field in fields]
            if any(first and not second for first, second in pairwise(has_default)):
                raise TypeError(f"record {name}: fields with a default must come last")
            defaults = [namespace.pop(field) for field in fields if field in namespace]
            base = namedtuple(name, fields, defaults=defaults, module=namespace.get("__module__"))
            body = {key: value for key, value in namespace.items() if key != "__annotate__"}
            body.setdefault("__slots__", ())
            return type(name, (base,), body)

    class Record(metaclass=_RecordMeta):
        """The base of typed records (typing.NamedTuple to type checkers)."""
