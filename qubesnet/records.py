"""Typed records of validated values, without importing ``typing`` at run time.

A record is declared as a ``typing.NamedTuple`` is::

    class Upstream(Record):
        addr: IPv4Address | IPv6Address
        origin: str

To mypy, ``Record`` *is* ``typing.NamedTuple``: every field has its
declared type. At run time it builds, from the class's annotations, a
tuple subclass that behaves as the ``collections.namedtuple`` that
``typing.NamedTuple`` builds (fields by name and position, defaults,
``_fields``, ``_field_defaults``, ``_replace``, ``_asdict``, ``_make``,
equality and hashing as tuples, slots, pickling), without loading the
``typing`` module (several milliseconds at the start of
``qubes-setup-dnat-to-ns``, which pins its imports down in
tests/unit/test_startup_imports.py) and without ``namedtuple``'s generated
source: a record class costs about a quarter of a ``typing.NamedTuple``
one (the vif core declares some thirty, built at every start). Methods and
properties in the class body are kept; fields with a default must come
last.
"""

from __future__ import annotations

from itertools import pairwise
from operator import itemgetter

__all__ = ["Record"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple as Record
else:

    def _new(cls, *args, **kwargs):
        if kwargs or len(args) != len(cls._fields):
            args = cls._bind(args, kwargs)
        return tuple.__new__(cls, args)

    class _Fields(tuple):
        """What every record has (namedtuple's methods, written once)."""

        __slots__ = ()  # _fields and _field_defaults: set on each record class

        @classmethod
        def _bind(cls, args, kwargs):
            fields = cls._fields
            if len(args) > len(fields):
                raise TypeError(f"{cls.__name__}() takes {len(fields)} arguments but {len(args)} were given")
            values = list(args)
            for name in fields[len(args):]:
                if name in kwargs:
                    values.append(kwargs.pop(name))
                elif name in cls._field_defaults:
                    values.append(cls._field_defaults[name])
                else:
                    raise TypeError(f"{cls.__name__}() missing required argument: {name!r}")
            if kwargs:
                raise TypeError(f"{cls.__name__}() got unexpected or repeated arguments: {', '.join(kwargs)}")
            return values

        @classmethod
        def _make(cls, iterable):
            return cls(*iterable)

        def _replace(self, **changes):
            values = [changes.pop(name, value) for name, value in zip(self._fields, self, strict=True)]
            if changes:
                raise TypeError(f"{type(self).__name__}._replace() got unexpected field names: {', '.join(changes)}")
            return tuple.__new__(type(self), values)

        def _asdict(self):
            return dict(zip(self._fields, self, strict=True))

        def __repr__(self):
            fields = ", ".join(f"{name}={value!r}" for name, value in zip(self._fields, self, strict=True))
            return f"{type(self).__name__}({fields})"

        def __getnewargs__(self):
            return tuple(self)

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
            body = {key: value for key, value in namespace.items() if key != "__annotate__"}
            body["_field_defaults"] = {field: body.pop(field) for field in fields if field in body}
            body["_fields"] = body["__match_args__"] = fields
            body["__new__"] = _new
            body.setdefault("__slots__", ())
            for index, field in enumerate(fields):
                body[field] = property(itemgetter(index), doc=f"Alias for field number {index}")
            return type.__new__(type, name, (_Fields,), body)

    class Record(metaclass=_RecordMeta):
        """The base of typed records (typing.NamedTuple to type checkers)."""
