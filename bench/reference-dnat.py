#!/usr/bin/python3
"""Benchmark reference for qubes-setup-dnat-to-ns, modelled on the Python
tool it replaces: dbus-python to ask systemd-resolved (falling back to
resolv.conf), then two nft processes, one listing the chain to compare, one
loading the new chain. QubesDB is read with this project's client, standing
in for the original's C extension. Not a product: only for `make bench`.
Usage: reference-dnat.py RESOLV_CONF
"""
import os
import subprocess
import sys
from ipaddress import IPv4Address

import dbus

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from qubesnet.qubesdb import QubesDB, default_address


def get_dns_resolv_conf(path):
    servers = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            words = line.split()
            if len(words) >= 2 and words[0] == "nameserver":
                try:
                    addr = IPv4Address(words[1])
                except ValueError:
                    continue
                if not addr.is_loopback:
                    servers.append(addr)
    return servers


def get_dns_resolved(path):
    try:
        bus = dbus.SystemBus()
        resolve1 = bus.get_object("org.freedesktop.resolve1", "/org/freedesktop/resolve1")
        dns = resolve1.Get("org.freedesktop.resolve1.Manager", "DNS", dbus_interface="org.freedesktop.DBus.Properties")
    except dbus.exceptions.DBusException:
        return get_dns_resolv_conf(path)
    dns = sorted(dns, key=lambda x: x[0] != 0)
    return [IPv4Address(bytes(addr)) for ifindex, family, addr in dns if family == 2]


def main():
    with QubesDB.open(default_address(os.environ)) as qdb:
        virtual = [IPv4Address(v.decode()) for v in (qdb.read(k) for k in
                   ("/qubes-netvm-primary-dns", "/qubes-netvm-secondary-dns")) if v]
    upstream = get_dns_resolved(sys.argv[1])
    rules = ["table ip qubes {", "chain dnat-dns {", "type nat hook prerouting priority dstnat; policy accept;"]
    for i, vm_ns in enumerate(virtual):
        if upstream:
            to = upstream[i % len(upstream)]
            rules += [f"ip daddr {vm_ns} udp dport 53 dnat to {to}", f"ip daddr {vm_ns} tcp dport 53 dnat to {to}"]
        else:
            rules += [f"ip daddr {vm_ns} udp dport 53 drop", f"ip daddr {vm_ns} tcp dport 53 drop"]
    rules += ["}", "}"]
    try:
        old = subprocess.check_output(["nft", "list", "chain", "ip", "qubes", "dnat-dns"]).decode().splitlines()
    except subprocess.CalledProcessError:
        old = []
    if [line.strip() for line in old] == rules:
        return 100
    preamble = ["add table ip qubes", "add chain ip qubes dnat-dns", "delete chain ip qubes dnat-dns"]
    return subprocess.run(["nft", "--", "\n".join(preamble + rules)]).returncode


if __name__ == "__main__":
    sys.exit(main())
