"""qubesnet.records.Record: typing.NamedTuple to mypy, a plain namedtuple at run time.

The run-time half must build exactly the record the annotations declare
(what mypy checks the code against): same fields in the same order, same
defaults, immutable, with the methods of the class body.
"""

from __future__ import annotations

import pickle
from ipaddress import IPv4Address

import pytest

from qubesnet.records import Record
from qubesnet.validate import AddressList, VifName
from setup_dnat_to_ns.chain import Translation
from setup_dnat_to_ns.derive import Derived
from setup_dnat_to_ns.upstreams import Upstream

VALIDATED = [VifName, AddressList, Upstream, Translation, Derived]


@pytest.mark.parametrize("record", VALIDATED, ids=lambda r: r.__name__)
def test_fields_are_the_annotations_in_order(record: type) -> None:
    assert record._fields == tuple(record.__annotations__)  # type: ignore[attr-defined]
    assert issubclass(record, tuple)


def test_defaults_methods_immutability_and_pickling() -> None:
    addresses = AddressList(IPv4Address("10.137.0.12"), None)
    assert addresses.ignored == () and addresses.used == (IPv4Address("10.137.0.12"),)
    assert Derived([]) == Derived([], (), None)
    assert VifName("vif12.0", 12, 0).metric == 32740
    with pytest.raises(AttributeError):
        addresses.ipv4 = None  # type: ignore[misc]
    assert not hasattr(addresses, "__dict__")  # slots, as typing.NamedTuple's
    assert pickle.loads(pickle.dumps(addresses)) == addresses
    assert addresses._replace(ipv6=None) == addresses


def test_a_default_before_a_field_without_one_is_refused() -> None:
    with pytest.raises(TypeError, match="must come last"):
        class Bad(Record):
            first: int = 0
            second: int  # type: ignore[misc]  # mypy refuses it too: the point of the test


class Point(Record):
    x: int
    y: int = 0

    @property
    def norm(self) -> int:
        return abs(self.x) + abs(self.y)


def test_a_record_behaves_as_its_namedtuple() -> None:
    from collections import namedtuple

    reference = namedtuple("reference", ["x", "y"], defaults=[0])  # what typing.NamedTuple would build
    assert Point(1, 2) == reference(1, 2) == (1, 2) and hash(Point(1, 2)) == hash(reference(1, 2))
    assert Point(1) == Point(x=1) == Point(1, y=0) == reference(1)
    assert repr(Point(1, 2)) == "Point(x=1, y=2)" and repr(reference(1, 2)) == "reference(x=1, y=2)"
    assert Point._fields == reference._fields and Point._field_defaults == reference._field_defaults
    assert Point(3, -4)._asdict() == {"x": 3, "y": -4} and Point._make([5, 6]) == Point(5, 6)
    assert Point(3, -4).norm == 7 and Point(3, -4)[1] == -4 and Point(3, -4)._replace(y=1) == Point(3, 1)
    assert pickle.loads(pickle.dumps(Point(1, 2))) == Point(1, 2)
    match Point(1, 2):
        case Point(a, b):
            assert (a, b) == (1, 2)
    for args, kwargs in (((), {}), ((1, 2, 3), {}), ((1,), {"x": 1}), ((1,), {"z": 2})):
        with pytest.raises(TypeError):
            Point(*args, **kwargs)
        with pytest.raises(TypeError):
            reference(*args, **kwargs)
    with pytest.raises(TypeError, match="unexpected field"):
        Point(1)._replace(z=2)  # type: ignore[call-arg]
