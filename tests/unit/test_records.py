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
