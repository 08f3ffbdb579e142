"""Our netlink message declarations against pyroute2's full classes, byte for byte.

qubesnet/netlink/messages.py declares rtmsg, ndmsg, ifaddrmsg and ifinfmsg
again, with only the fields and attributes the hotplug uses, so that the
entry points need not import pyroute2's rtnl package. A declaration with a
field in the wrong place, of the wrong width, or an attribute under the
wrong number would still encode *something*: the kernel would then read a
route's table as its protocol. So every case below sets every header field
to a value distinct from its neighbours (a swap of two fields moves bytes)
and compares the whole encoded message, header included, with what
pyroute2's own class of the same name encodes from the same values, on the
pyroute2 version installed (CI runs this on Debian 12's 0.7.2 and on the
newest release). The other direction (decoding pyroute2's bytes with our
class) is checked too: the hotplug reads dumps with these classes.

ct_msg (qubesnet/netlink/ctnl.py) keeps CTA_TUPLE_PROTO as opaque bytes, so
it is checked by decoding pyroute2's encoding of a full conntrack tuple and
encoding the delete request built from it again.

To add a case: a (name, fields, attrs) triple in CASES; use values that
differ from the neighbouring fields' values.
"""

from __future__ import annotations

from typing import Any

import pytest

# pyroute2's full classes, imported while the module is collected: pyroute2
# 0.7's config module asks platform.uname() at import, which starts a process,
# and unit tests refuse processes (tests/unit/conftest.py).
from pyroute2.netlink import NLA_F_NESTED, nla  # type: ignore[import-untyped, unused-ignore]
from pyroute2.netlink.nfnetlink import nfgen_msg  # type: ignore[import-untyped, unused-ignore]
from pyroute2.netlink.nfnetlink.nfctsocket import nfct_msg  # type: ignore[import-untyped, unused-ignore]
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg  # type: ignore[import-untyped, unused-ignore]
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg  # type: ignore[import-untyped, unused-ignore]
from pyroute2.netlink.rtnl.ndmsg import ndmsg  # type: ignore[import-untyped, unused-ignore]
from pyroute2.netlink.rtnl.rtmsg import rtmsg  # type: ignore[import-untyped, unused-ignore]

from qubesnet.netlink import ctnl, messages

FULL = {"rtmsg": rtmsg, "ndmsg": ndmsg, "ifaddrmsg": ifaddrmsg, "ifinfmsg": ifinfmsg}

HEADER = {"type": 24, "flags": 0x0405, "sequence_number": 0x01020304, "pid": 0x0A0B0C0D}

# (class name, header fields, attributes)
CASES: list[tuple[str, dict[str, int], list[tuple[str, Any]]]] = [
    (
        "rtmsg",
        {"family": 2, "dst_len": 32, "src_len": 24, "tos": 4, "table": 254, "proto": 3,
         "scope": 253, "type": 1, "flags": 0x11223344},
        [("RTA_DST", "10.137.0.12"), ("RTA_OIF", 7), ("RTA_PRIORITY", 32740), ("RTA_TABLE", 254)],
    ),
    (
        "rtmsg",
        {"family": 10, "dst_len": 128, "src_len": 0, "tos": 0, "table": 254, "proto": 4,
         "scope": 0, "type": 1, "flags": 0},
        [("RTA_DST", "fd09:24ef:4179::a89:c"), ("RTA_OIF", 0x01020304), ("RTA_PRIORITY", 32740)],
    ),
    (
        "ndmsg",
        {"family": 2, "ifindex": 0x01020304, "state": 0x80, "flags": 0x08, "ndm_type": 5},
        [("NDA_DST", "10.137.0.12"), ("NDA_LLADDR", "00:16:3e:5e:6c:0c")],
    ),
    (
        "ndmsg",
        {"family": 10, "ifindex": 9, "state": 0x0102, "flags": 0x03, "ndm_type": 4},
        [("NDA_DST", "fd09:24ef:4179::a89:c"), ("NDA_LLADDR", "fe:ff:ff:ff:ff:ff")],
    ),
    (
        "ifaddrmsg",
        {"family": 2, "prefixlen": 32, "flags": 0x80, "scope": 200, "index": 0x01020304},
        [("IFA_LOCAL", "10.137.0.1"), ("IFA_ADDRESS", "10.137.0.1")],
    ),
    (
        "ifaddrmsg",
        {"family": 10, "prefixlen": 128, "flags": 0x02, "scope": 0, "index": 7},
        [("IFA_LOCAL", "fd09:24ef:4179::a89:1"), ("IFA_ADDRESS", "fd09:24ef:4179::a89:1")],
    ),
    (
        "ifinfmsg",
        {"family": 0, "ifi_type": 0x0304, "index": 0x01020304, "flags": 0x11223344, "change": 0x55667788},
        [("IFLA_IFNAME", "vif12.0"), ("IFLA_ADDRESS", "fe:ff:ff:ff:ff:ff"), ("IFLA_GROUP", 2),
         ("IFLA_NET_NS_FD", 0x0A0B0C0D)],
    ),
    (
        "ifinfmsg",
        {"family": 7, "ifi_type": 1, "index": 12, "flags": 1, "change": 1},
        [("IFLA_IFNAME", "vif32752.15")],
    ),
]


def _build(cls: Any, fields: dict[str, int], attrs: list[tuple[str, Any]]) -> Any:
    msg = cls()
    for name, value in fields.items():
        msg[name] = value
    msg["attrs"] = list(attrs)
    for name, value in HEADER.items():
        msg["header"][name] = value
    return msg


def _encoded(msg: Any) -> bytes:
    msg.encode()
    return bytes(msg.data)


def _ids() -> list[str]:
    return [f"{name}-{fields['family']}-{attrs[-1][0]}" for name, fields, attrs in CASES]


@pytest.mark.parametrize(("name", "fields", "attrs"), CASES, ids=_ids())
def test_ours_encodes_as_pyroute2s_own_class(name: str, fields: dict[str, int], attrs: list[tuple[str, Any]]) -> None:
    ours = _build(getattr(messages, name), fields, attrs)
    theirs = _build(FULL[name], fields, attrs)
    ours_bytes, theirs_bytes = _encoded(ours), _encoded(theirs)
    assert ours_bytes.hex(" ") == theirs_bytes.hex(" ")
    # Every header field and attribute is really in there (no value left at 0
    # by a field name pyroute2 does not know).
    assert len(ours_bytes) > 16 + 4 * len(attrs)


@pytest.mark.parametrize(("name", "fields", "attrs"), CASES, ids=_ids())
def test_ours_decodes_pyroute2s_encoding(name: str, fields: dict[str, int], attrs: list[tuple[str, Any]]) -> None:
    theirs = _build(FULL[name], fields, attrs)
    ours = getattr(messages, name)(_encoded(theirs))
    ours.decode()
    assert {key: ours[key] for key in fields} == fields
    for key, value in HEADER.items():
        assert ours["header"][key] == value
    assert [(key, ours.get_attr(key)) for key, _ in attrs] == attrs


def _conntrack_class(proto_flags: int) -> type[nfgen_msg]:
    """pyroute2's conntrack message (pyroute2 has no type information, hence
    the ignores) with NLA_F_NESTED on the tuple and address
    nests, as the kernel's nla_nest_start() sets it in a dump, and
    ``proto_flags`` on CTA_TUPLE_PROTO. New classes on each call: pyroute2
    compiles an nla_map once per class and subclasses inherit the result."""

    class CtaIp(nla):  # type: ignore[misc, unused-ignore]
        nla_flags = NLA_F_NESTED
        nla_map = nfct_msg.cta_tuple.cta_ip.nla_map

    class CtaProto(nla):  # type: ignore[misc, unused-ignore]
        nla_flags = proto_flags
        nla_map = nfct_msg.cta_tuple.cta_proto.nla_map

    class CtaTuple(nla):  # type: ignore[misc, unused-ignore]
        nla_flags = NLA_F_NESTED
        nla_map = nfct_msg.cta_tuple.nla_map

    CtaTuple.cta_ip = CtaIp  # pyroute2 finds nested classes by the names in nla_map
    CtaTuple.cta_proto = CtaProto

    class Message(nfgen_msg):  # type: ignore[misc, unused-ignore]
        prefix = nfct_msg.prefix
        nla_map = nfct_msg.nla_map

    for *_, kind in nfct_msg.nla_map:  # the other nests, unchanged
        if isinstance(getattr(nfct_msg, kind, None), type):
            setattr(Message, kind, getattr(nfct_msg, kind))
    Message.cta_tuple = CtaTuple
    return Message


# What a dump delivers, and what ct_msg must send back from it: the same,
# except that CTA_TUPLE_PROTO, which ct_msg keeps as opaque bytes, goes
# without NLA_F_NESTED (ctnetlink parses its nests with or without the flag).
KERNEL_ENTRY = _conntrack_class(NLA_F_NESTED)
DELETE_REQUEST = _conntrack_class(0)


def _full_conntrack_entry(cls: type[nfgen_msg]) -> bytes:
    def tuple_(src: str, dst: str, sport: int, dport: int) -> dict[str, Any]:
        return {"attrs": [
            ("CTA_TUPLE_IP", {"attrs": [("CTA_IP_V4_SRC", src), ("CTA_IP_V4_DST", dst)]}),
            ("CTA_TUPLE_PROTO", {"attrs": [("CTA_PROTO_NUM", 6), ("CTA_PROTO_SRC_PORT", sport),
                                           ("CTA_PROTO_DST_PORT", dport)]}),
        ]}

    msg = cls()
    msg["nfgen_family"] = 2
    msg["version"] = 0
    msg["res_id"] = 0x0102
    msg["attrs"] = [
        ("CTA_TUPLE_ORIG", tuple_("10.137.0.12", "198.51.100.1", 40000, 53)),
        ("CTA_TUPLE_REPLY", tuple_("198.51.100.1", "10.137.0.12", 53, 40000)),
        ("CTA_ID", 0x11223344),
        ("CTA_ZONE", 7),
    ]
    for name, value in HEADER.items():
        msg["header"][name] = value
    return _encoded(msg)


def test_conntrack_entry_decodes_and_reencodes_unchanged() -> None:
    entry = ctnl.ct_msg(_full_conntrack_entry(KERNEL_ENTRY))
    entry.decode()
    assert entry["nfgen_family"] == 2 and entry["res_id"] == 0x0102
    assert entry.get_attr("CTA_ID") == 0x11223344 and entry.get_attr("CTA_ZONE") == 7
    orig_ip = entry.get_attr("CTA_TUPLE_ORIG").get_attr("CTA_TUPLE_IP")
    assert (orig_ip.get_attr("CTA_IP_V4_SRC"), orig_ip.get_attr("CTA_IP_V4_DST")) == ("10.137.0.12", "198.51.100.1")

    # What the purge sends back: the entry's attributes, in ct_msg, as decoded.
    again = ctnl.ct_msg()
    again["nfgen_family"] = entry["nfgen_family"]
    again["res_id"] = entry["res_id"]
    again["attrs"] = [(name, entry.get_attr(name)) for name in
                      ("CTA_TUPLE_ORIG", "CTA_TUPLE_REPLY", "CTA_ID", "CTA_ZONE")]
    for name, value in HEADER.items():
        again["header"][name] = value
    assert _encoded(again).hex(" ") == _full_conntrack_entry(DELETE_REQUEST).hex(" ")
