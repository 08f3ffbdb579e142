"""The rtnetlink messages the hotplug sends and reads, declared on pyroute2's
generic netlink machinery (``nlmsg``, ``nla``).

pyroute2's own rtmsg/ndmsg/ifaddrmsg/ifinfmsg modules would do, but importing
them loads the rtnl package (route-table name files, dataclasses, pathlib)
and every link-kind plugin: a third of a hotplug's run time. These
declarations carry only the fields and attributes used here; their layout is
the kernel's (linux/rtnetlink.h, linux/if_link.h, linux/neighbour.h,
linux/if_addr.h). tests/unit/test_netlink_messages.py checks them byte for byte against
pyroute2's full classes.
"""

from __future__ import annotations

# _pyroute2 must come first: it makes the pyroute2 import below light.
from . import _pyroute2  # noqa: F401
from pyroute2.netlink import nlmsg


class ifinfmsg(nlmsg):  # noqa: N801 (kernel and pyroute2 naming)
    prefix = "IFLA_"
    fields = (
        ("family", "B"),
        ("__align", "x"),
        ("ifi_type", "H"),
        ("index", "i"),
        ("flags", "I"),
        ("change", "I"),
    )
    nla_map = (
        (0, "IFLA_UNSPEC", "none"),
        (1, "IFLA_ADDRESS", "l2addr"),
        (3, "IFLA_IFNAME", "asciiz"),
        (27, "IFLA_GROUP", "uint32"),
        (28, "IFLA_NET_NS_FD", "uint32"),
    )


class ifaddrmsg(nlmsg):  # noqa: N801
    prefix = "IFA_"
    fields = (
        ("family", "B"),
        ("prefixlen", "B"),
        ("flags", "B"),
        ("scope", "B"),
        ("index", "I"),
    )
    nla_map = (
        (0, "IFA_UNSPEC", "none"),
        (1, "IFA_ADDRESS", "ipaddr"),
        (2, "IFA_LOCAL", "ipaddr"),
    )


class rtmsg(nlmsg):  # noqa: N801
    prefix = "RTA_"
    fields = (
        ("family", "B"),
        ("dst_len", "B"),
        ("src_len", "B"),
        ("tos", "B"),
        ("table", "B"),
        ("proto", "B"),
        ("scope", "B"),
        ("type", "B"),
        ("flags", "I"),
    )
    nla_map = (
        (0, "RTA_UNSPEC", "none"),
        (1, "RTA_DST", "ipaddr"),
        (4, "RTA_OIF", "uint32"),
        (6, "RTA_PRIORITY", "uint32"),
        (15, "RTA_TABLE", "uint32"),
    )


class ndmsg(nlmsg):  # noqa: N801
    prefix = "NDA_"
    fields = (
        ("family", "B"),
        ("__pad", "3x"),
        ("ifindex", "i"),
        ("state", "H"),
        ("flags", "B"),
        ("ndm_type", "B"),
    )
    nla_map = (
        (0, "NDA_UNSPEC", "none"),
        (1, "NDA_DST", "ipaddr"),
        (2, "NDA_LLADDR", "l2addr"),
        (3, "NDA_CACHEINFO", "hex"),
        (4, "NDA_PROBES", "hex"),
        (5, "NDA_VLAN", "hex"),
        (6, "NDA_PORT", "hex"),
        (7, "NDA_VNI", "hex"),
        (8, "NDA_IFINDEX", "uint32"),
    )
