"""Tests written because a mutant of validation, inputs, locks, the command
line's failure reporting or the mapped namespace's names and NAT table in
``make mutation`` or ``make mutation-sample`` survived (docs/testing.md).

Each names the mutant it kills.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv6Address

import pytest

from qubes_netsim.qubesdbd import QubesDBDouble
from qubes_netsim.xenstored import XenStoreDouble
from qubesnet.errors import ApplyError, ConfigError
from qubesnet.locks import KeyLocks, slot
from qubesnet.qubesdb import QubesDB
from qubesnet.validate import (
    decode_text,
    parse_address_list,
    parse_host_address,
    parse_ipv6,
    parse_vif_name,
    parse_word,
    parse_xenbus_path,
    shown,
    why_not_host,
)
from qubesnet.xenstore import XenStore
from vif_route_qubes.cli import ExitCode, main
from vif_route_qubes.inputs import parse_env, read_inputs
from vif_route_qubes.mapped import MappedAddress, build_nat_table
from vif_route_qubes.mapped_names import peer_name

from .test_locks import CTX, _hold

ENV = {"vif": "vif12.0", "XENBUS_PATH": "backend/vif/12/0"}
BASE = "/local/domain/1/backend/vif/12/0"


@pytest.fixture
def stores(tmp_path: object) -> Iterator[tuple[QubesDBDouble, XenStore, QubesDB]]:
    """A dual-stack client of a netvm whose QubesDB has IPv4 only."""
    d = str(tmp_path)
    with XenStoreDouble(os.path.join(d, "xs.sock"), domid=1) as xsd, QubesDBDouble(os.path.join(d, "q.sock")) as qdbd:
        xsd.write(f"{BASE}/ip", "10.137.0.12 fd09:24ef:4179::a89:12")
        xsd.write(f"{BASE}/mac", "00:16:3e:5e:6c:0c")
        qdbd.write("/qubes-netvm-gateway", "10.137.0.1")
        with XenStore.open(xsd.path, 2) as xs, QubesDB.open(qdbd.path, 2) as qdb:
            yield qdbd, xs, qdb


def test_ipv6_is_on_for_the_netvm_only_when_qubesdb_says_so(stores: tuple[QubesDBDouble, XenStore, QubesDB]) -> None:
    """Kills inputs-ipv6-always-on: online on a netvm without /qubes-ip6
    and /qubes-netvm-gateway6 routes no client IPv6; either key turns it
    on; offline takes it as on (so that routes are removed)."""
    qdbd, xs, qdb = stores
    env = parse_env(ENV)
    assert read_inputs(env, xs, qdb, online=True).netvm_ipv6 is False
    assert read_inputs(env, xs, qdb, online=False).netvm_ipv6 is True
    qdbd.write("/qubes-ip6", "fd09:24ef:4179::a89:1")
    assert read_inputs(env, xs, qdb, online=True).netvm_ipv6 is True
    qdbd.rm("/qubes-ip6")
    qdbd.write("/qubes-netvm-gateway6", "fd09:24ef:4179::a89:1")
    assert read_inputs(env, xs, qdb, online=True).netvm_ipv6 is True


def _try_lock(path: str, keys: list[str], result: object) -> None:
    locks = KeyLocks(path)
    try:
        locks.acquire(keys, timeout=0.5)
    except ApplyError:
        result.put(False)  # type: ignore[attr-defined]
        return
    result.put(True)  # type: ignore[attr-defined]
    locks.release()


def test_a_timed_out_acquire_keeps_none_of_its_locks(tmp_path: object) -> None:
    """Kills locks-kept-after-timeout: a process that gave up waiting for
    one key must not sit on the keys it took before (here the lower slot):
    another process gets that key at once."""
    path = os.path.join(str(tmp_path), "hotplug.lock")
    low, high = sorted(["if:vif12.0", "addr:10.137.0.12"], key=slot)
    ready, release = CTX.Event(), CTX.Event()
    holder = CTX.Process(target=_hold, args=(path, [high], ready, release))
    holder.start()
    mine = KeyLocks(path)
    try:
        assert ready.wait(5)
        with pytest.raises(ApplyError):
            mine.acquire([low, high], timeout=0.3)  # takes `low`, then waits for `high`
        result = CTX.Queue()
        other = CTX.Process(target=_try_lock, args=(path, [low], result))
        other.start()
        other.join(10)
        assert result.get(timeout=5) is True, "the timed-out process still holds the key it took first"
    finally:
        release.set()
        holder.join(10)
        mine.release()


@pytest.mark.parametrize("argv", [["--dry-run", "restart"], ["--dry-run", "--timeout", "0.5", "online"]])
def test_a_failed_dry_run_writes_nothing(xsd: XenStoreDouble, argv: list[str]) -> None:
    """Kills cli-dry-run-reports-failure: a dry run fails like the real
    event (exit 1) but writes neither hotplug-status nor hotplug-error."""
    assert main(argv) == ExitCode.FAILURE
    assert xsd.read(f"{BASE}/hotplug-status") is None
    assert xsd.read(f"{BASE}/hotplug-error") is None


# --- survivors of make mutation-sample (cosmic-ray) in qubesnet/validate.py -------


def test_limits_are_inclusive() -> None:
    """Kills ``>`` as ``>=`` (and XS_PATH_MAX - 1) in decode_text,
    parse_xenbus_path and parse_address_list: a value of exactly the limit
    passes, one more is refused."""
    assert decode_text("k", b"a" * 10, limit=10) == "a" * 10
    assert decode_text("k", "a" * 10, limit=10) == "a" * 10
    for value in (b"a" * 11, "a" * 11):
        with pytest.raises(ConfigError, match="at most 10"):
            decode_text("k", value, limit=10)
    path = "/".join(["a" * 1023, "a" * 1023, "a" * 1024])  # 3072 characters
    assert len(path) == 3072 and parse_xenbus_path("k", path) == path
    with pytest.raises(ConfigError):
        parse_xenbus_path("k", path + "a")
    eight = " ".join(f"10.137.0.{n}" for n in range(1, 9))
    assert len(parse_address_list("k", eight).ignored) == 7
    with pytest.raises(ConfigError, match="9 addresses given"):
        parse_address_list("k", eight + " 10.137.0.9")


def test_vif_name_of_fifteen_characters_is_the_longest() -> None:
    """Kills ``len(value) >= IFNAMSIZ`` as ``>``: the kernel's names hold
    15 characters and a NUL."""
    assert parse_vif_name("k", "vif32752.123456").devid == 123456
    with pytest.raises(ConfigError, match="bad interface name"):
        parse_vif_name("k", "vif32752.1234567")


def test_shown_cuts_after_64_characters() -> None:
    """Kills SHOWN_MAX +- 1 and ``<=`` as ``<``."""
    assert shown("a" * 64) == repr("a" * 64)
    assert shown("a" * 65) == repr("a" * 64) + "... (65 characters)"


def test_parse_word() -> None:
    """Kills the negated condition of parse_word (not reached by the inputs tests)."""
    assert parse_word("k", "vif") == "vif"
    with pytest.raises(ConfigError, match="bad value"):
        parse_word("k", "a b")


def test_reserved_ipv6_outside_the_first_block_is_a_host() -> None:
    """Kills ``is_reserved and in ::/8`` with ``or``: Python calls much of the
    not yet allocated unicast space reserved (4000::/3...); only ::/8 is
    refused."""
    assert why_not_host(IPv6Address("4000::1")) is None
    assert why_not_host(IPv6Address("::1:2:3")) == "a reserved IPv6 address"


@pytest.mark.parametrize("value", ["", "10.137.0.5/32", "fe80::1%eth0"])
def test_prefix_zone_or_nothing_is_not_a_single_address(value: str) -> None:
    """Kills ``or`` as ``and`` in parse_host_address's first check: each
    of these gets the message that says what is expected."""
    with pytest.raises(ConfigError, match="expected a single host address"):
        parse_host_address("k", value)


def test_a_second_ipv4_address_is_never_taken_for_ipv6() -> None:
    """Kills ``isinstance(addr, IPv6Address) and ipv6 is None`` with ``or``."""
    got = parse_address_list("k", "10.137.0.5 10.137.0.6")
    assert got.ipv4 == IPv4Address("10.137.0.5") and got.ipv6 is None
    assert got.ignored == (IPv4Address("10.137.0.6"),)


def test_parse_ipv6_refuses_link_local_unless_asked() -> None:
    """Kills parse_ipv6's default ``allow_link_local=True``: only the
    gateway6 key may be link-local (its callers ask); an IPv6 virtual DNS
    address may not."""
    with pytest.raises(ConfigError, match="link-local"):
        parse_ipv6("k", "fe80::1")
    assert parse_ipv6("k", "fe80::1", allow_link_local=True) == IPv6Address("fe80::1")


# --- survivors of make mutation-sample (cosmic-ray) in the mapped namespace ------


def test_the_peer_keeps_its_name_up_to_fifteen_characters() -> None:
    """Kills ``len(name) < 16`` as ``< 15`` in peer_name."""
    assert peer_name("vif12345.1234") == "vif12345.1234-p"  # 15 characters
    assert peer_name("vif12345.12345") == "to-netvm"  # 16 would not fit


def test_hidden_dns_through_the_visible_gateway_is_port_53_both_ways() -> None:
    """Kills the port 53 +- 1 of the hiding rules: the client's queries to
    the visible gateway's port 53 go to the virtual DNS address, and only
    answers from its port 53 come back from the visible gateway."""
    m = MappedAddress(IPv4Address("10.138.7.9"), IPv4Address("192.168.1.128"), IPv4Address("192.168.1.1"),
                      IPv4Address("10.137.0.1"), (IPv4Address("10.137.0.1"),), IPv4Address("10.139.1.1"))
    rules = [(c["add"]["rule"]["chain"], c["add"]["rule"]["expr"]) for c in build_nat_table(m, "vif12.0", "p")
             if "rule" in c.get("add", {})]
    ports = {(chain, e["match"]["left"]["payload"]["protocol"], e["match"]["left"]["payload"]["field"],
              e["match"]["right"])
             for chain, expr in rules for e in expr
             if "match" in e and e["match"]["left"].get("payload", {}).get("field") in ("dport", "sport")}
    assert ports == {("from-client", p, "dport", 53) for p in ("udp", "tcp")} | \
        {("from-netvm", p, "sport", 53) for p in ("udp", "tcp")}
