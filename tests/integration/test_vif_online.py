"""vif-route-qubes online: kernel state and packets, for IPv4 and IPv6 clients."""

from __future__ import annotations

from qubes_netsim.topology import GATEWAY, GATEWAY6, UPSTREAM, UPSTREAM6, SimNetvm

METRIC_12 = 32740  # domid 12: the contract's 32752 - 12, written out so that a wrong formula fails


def test_online_configures_the_vif_and_the_client_reaches_gateway_and_upstream(sim: SimNetvm) -> None:
    client = sim.add_client(12, "10.137.0.12")
    assert not client.ping(UPSTREAM, wait=1), "no connectivity before online"

    result = sim.vif_route("online", client)

    assert result.returncode == 0, result.stderr
    assert sim.hotplug_status(client) == "connected"
    assert sim.hotplug_error(client) is None
    link = sim.netvm.ip_json("link", "show", "dev", "vif12.0")[0]
    assert "UP" in link["flags"]
    assert link["group"] == "2"
    assert sim.set_elements("ip", "allowed") == {("vif12.0", "10.137.0.12")}
    assert sim.set_elements("ip", "downstream") == {"10.137.0.12"}
    routes = [r for r in sim.routes("-4") if r["dst"] == "10.137.0.12"]
    assert routes == [{"dst": "10.137.0.12", "dev": "vif12.0", "scope": "link", "metric": METRIC_12, "flags": []}]
    neigh = sim.neighbours("vif12.0")
    assert [(n["dst"], n["lladdr"]) for n in neigh] == [("10.137.0.12", client.mac)]
    addrs = sim.netvm.ip_json("-4", "addr", "show", "dev", "vif12.0")[0]["addr_info"]
    assert [(a["local"], a["prefixlen"]) for a in addrs if "local" in a] == [(GATEWAY, 32)]
    assert sim.netvm.sysctl("net/ipv4/conf/vif12.0/proxy_arp") == "1"

    assert client.ping(GATEWAY)
    assert client.ping(UPSTREAM)


def test_online_ipv6_client(sim: SimNetvm) -> None:
    client = sim.add_client(12, "10.137.0.12", "fd09:24ef:4179::a89:12")

    result = sim.vif_route("online", client)

    assert result.returncode == 0, result.stderr
    assert sim.set_elements("ip6", "allowed") == {("vif12.0", "fd09:24ef:4179::a89:12")}
    assert sim.set_elements("ip6", "downstream") == {"fd09:24ef:4179::a89:12"}
    routes6 = [r for r in sim.routes("-6") if r["dst"] == "fd09:24ef:4179::a89:12"]
    assert [(r["dev"], r["metric"]) for r in routes6] == [("vif12.0", METRIC_12)]
    neigh6 = [n for n in sim.neighbours("vif12.0") if ":" in n["dst"]]
    assert [(n["dst"], n["lladdr"]) for n in neigh6] == [("fd09:24ef:4179::a89:12", client.mac)]
    addrs6 = sim.netvm.ip_json("-6", "addr", "show", "dev", "vif12.0", "scope", "global")[0]["addr_info"]
    assert [(a["local"], a["prefixlen"]) for a in addrs6 if "local" in a] == [(GATEWAY6, 128)]
    assert sim.netvm.sysctl("net/ipv6/conf/vif12.0/proxy_ndp") == "1"

    assert client.ping(GATEWAY6)
    assert client.ping(UPSTREAM6)
    assert client.ping(UPSTREAM)


def test_ipv6_disabled_on_the_vif_keeps_ipv4_working(sim: SimNetvm) -> None:
    client = sim.add_client(12, "10.137.0.12", "fd09:24ef:4179::a89:12")
    sim.netvm.set_sysctl("net/ipv6/conf/vif12.0/disable_ipv6", "1")

    result = sim.vif_route("online", client)

    assert result.returncode == 0, result.stderr
    assert "IPv6 is disabled on vif12.0" in result.stderr
    assert not [r for r in sim.routes("-6") if r["dst"] == "fd09:24ef:4179::a89:12"]
    # The IPv6 address is still protected against forgery from elsewhere.
    assert sim.set_elements("ip6", "downstream") == {"fd09:24ef:4179::a89:12"}
    assert client.ping(UPSTREAM)


def test_link_local_gateway6_is_not_put_on_the_vif(sim: SimNetvm) -> None:
    sim.qubesdb.write("/qubes-netvm-gateway6", "fe80::fcff:ffff:feff:ffff")
    client = sim.add_client(12, "10.137.0.12", "fd09:24ef:4179::a89:12")

    assert sim.vif_route("online", client).returncode == 0
    addrs6 = sim.netvm.ip_json("-6", "addr", "show", "dev", "vif12.0", "scope", "global")
    assert not addrs6 or not [a for a in addrs6[0]["addr_info"] if "local" in a]
    assert sim.netvm.sysctl("net/ipv6/conf/vif12.0/proxy_ndp") == "0"


def test_client_without_addresses_comes_up_but_cannot_send(sim: SimNetvm) -> None:
    client = sim.add_client(12, None)
    sim.write_backend(client, ip="")

    result = sim.vif_route("online", client)

    assert result.returncode == 0, result.stderr
    assert sim.hotplug_status(client) == "connected"
    assert not sim.set_elements("ip", "allowed")
    before = sim.counter("ip", "antispoof")
    client.ns.sh("ip addr add 10.137.0.50/32 dev eth0 && ip route add default dev eth0")
    assert not client.ping(UPSTREAM, wait=1)
    assert sim.counter("ip", "antispoof") > before


def test_purges_stale_conntrack_entries_of_the_client_address(sim: SimNetvm) -> None:
    client = sim.add_client(12, "10.137.0.12")
    add = "conntrack -I -s {src} -d {dst} -p udp --sport 1000 --dport 53 -t 120"
    sim.netvm.sh(add.format(src="10.137.0.12", dst=UPSTREAM))
    sim.netvm.sh(add.format(src=UPSTREAM, dst="10.137.0.12"))
    sim.netvm.sh(add.format(src="10.137.0.77", dst=UPSTREAM))

    assert sim.vif_route("online", client).returncode == 0

    table = sim.netvm.run(["conntrack", "-L"], check=False).stdout
    assert "10.137.0.12" not in table
    assert "10.137.0.77" in table, "entries of other addresses are kept"


def test_hardening_sysctls_when_the_service_is_enabled(sim: SimNetvm) -> None:
    sim.qubesdb.write("/qubes-service/harden-network-interfaces", "1")
    client = sim.add_client(12, "10.137.0.12", "fd09:24ef:4179::a89:12")

    assert sim.vif_route("online", client).returncode == 0

    for key, value in {
        "net/ipv4/conf/vif12.0/accept_redirects": "0",
        "net/ipv4/conf/vif12.0/send_redirects": "0",
        "net/ipv4/conf/vif12.0/accept_source_route": "0",
        "net/ipv6/conf/vif12.0/accept_ra": "0",
        "net/ipv6/conf/vif12.0/accept_dad": "0",
        "net/ipv6/conf/vif12.0/accept_redirects": "0",
    }.items():
        assert sim.netvm.sysctl(key) == value, key
    assert client.ping(UPSTREAM)


def test_no_hardening_by_default(sim: SimNetvm) -> None:
    client = sim.add_client(12, "10.137.0.12")
    assert sim.vif_route("online", client).returncode == 0
    assert sim.netvm.sysctl("net/ipv4/conf/vif12.0/send_redirects") == "1"


def test_vifname_renames_the_interface(sim: SimNetvm) -> None:
    client = sim.add_client(12, "10.137.0.12")
    sim.write_backend(client, vifname="vif-work")

    assert sim.vif_route("online", client).returncode == 0

    names = {link["ifname"] for link in sim.netvm.ip_json("link", "show")}
    assert "vif-work" in names and "vif12.0" not in names
    assert sim.set_elements("ip", "allowed") == {("vif-work", "10.137.0.12")}
    assert client.ping(UPSTREAM)

    assert sim.vif_route("offline", client).returncode == 0
    assert not sim.set_elements("ip", "allowed")


def test_add_and_remove_are_no_ops(sim: SimNetvm) -> None:
    client = sim.add_client(12, "10.137.0.12")
    for command in ("add", "remove"):
        result = sim.vif_route(command, client)
        assert result.returncode == 0
    assert not sim.set_elements("ip", "allowed")
    assert sim.hotplug_status(client) is None


def test_dry_run_prints_the_plan_and_changes_nothing(sim: SimNetvm) -> None:
    from tests import oracle

    client = sim.add_client(12, "10.137.0.12", "fd09:24ef:4179::a89:12")
    before = oracle.snapshot(sim.netvm, ("vif12.0",))

    result = sim.vif_route("online", client, "--dry-run")

    assert result.returncode == 0, result.stderr
    assert '"allowed"' in result.stdout and "vif12.0" in result.stdout
    assert "ip route add 10.137.0.12 dev vif12.0 metric 32740" in result.stdout
    assert "ip link set vif12.0 group 2 up" in result.stdout
    assert oracle.snapshot(sim.netvm, ("vif12.0",)) == before
    assert sim.hotplug_status(client) is None
