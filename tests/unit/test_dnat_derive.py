"""derive(): both families from one source, with a QubesDB stand-in and the
D-Bus query replaced (its real counterpart is tested against a real bus in
tests/integration/test_dnat_dns.py)."""

from __future__ import annotations

from ipaddress import ip_address
from pathlib import Path

import pytest
from pytest_mock import MockerFixture

from qubes_netsim.dbus import dns_value
from qubesnet.errors import ConfigError
from setup_dnat_to_ns import derive as derive_module
from setup_dnat_to_ns.chain import Translation
from setup_dnat_to_ns.derive import derive

V4 = {"/qubes-netvm-primary-dns": b"10.139.1.1", "/qubes-netvm-secondary-dns": b"10.139.1.2"}
V6 = {"/qubes-netvm-primary-dns6": b"fd09:24ef:4179::a8b:1", "/qubes-netvm-secondary-dns6": b"fd09:24ef:4179::a8b:2"}


class FakeQubesDB:
    def __init__(self, entries: dict[str, bytes]) -> None:
        self.entries = entries

    def read(self, key: str) -> bytes | None:
        return self.entries.get(key)


def run(tmp_path: Path, mocker: MockerFixture, entries: dict[str, bytes], resolv_conf: str = "",
        resolved: list[tuple[int, str]] | None = None) -> derive_module.Derived:
    path = tmp_path / "resolv.conf"
    path.write_text(resolv_conf)
    value = (dns_value(resolved), "") if resolved is not None else (None, "no system bus")
    mocker.patch("setup_dnat_to_ns.resolved.query_dns", return_value=value)
    return derive(FakeQubesDB(entries), str(path), 1.0)  # type: ignore[arg-type]


def pairs(mapping: list[Translation] | None) -> list[tuple[str, str | None]] | None:
    if mapping is None:
        return None
    return [(str(m.virtual), str(m.upstream.addr) if m.upstream else None) for m in mapping]


def test_dual_stack_resolv_conf(tmp_path: Path, mocker: MockerFixture) -> None:
    got = run(tmp_path, mocker, V4 | V6, "nameserver 192.0.2.1\nnameserver 2001:db8::1\nnameserver 2001:db8::2\n")
    assert pairs(got.mapping) == [("10.139.1.1", "192.0.2.1"), ("10.139.1.2", "192.0.2.1")]
    assert pairs(got.mapping6) == [("fd09:24ef:4179::a8b:1", "2001:db8::1"), ("fd09:24ef:4179::a8b:2", "2001:db8::2")]
    assert got.notes == ()


def test_without_ipv6_virtual_addresses_ipv6_is_not_served(tmp_path: Path, mocker: MockerFixture) -> None:
    got = run(tmp_path, mocker, V4, "nameserver 2001:db8::1\nnameserver 192.0.2.1\n")
    assert got.mapping6 is None
    assert pairs(got.mapping) == [("10.139.1.1", "192.0.2.1"), ("10.139.1.2", "192.0.2.1")]
    assert got.notes == ("not using 1 IPv6 server(s): no IPv6 virtual DNS address in QubesDB",)


def test_a_family_without_servers_is_refused_with_a_note(tmp_path: Path, mocker: MockerFixture) -> None:
    got = run(tmp_path, mocker, V4 | V6, "nameserver 192.0.2.1\nnameserver fe80::1%eth0\n")
    assert pairs(got.mapping6) == [("fd09:24ef:4179::a8b:1", None), ("fd09:24ef:4179::a8b:2", None)]
    assert any("fe80::1" in n and "link-local" in n for n in got.notes)
    assert got.notes[-1] == "no usable IPv6 upstream DNS server: DNS to the IPv6 virtual addresses is refused"


def test_resolved_global_ipv4_alone_means_ipv6_refused(tmp_path: Path, mocker: MockerFixture) -> None:
    """Tailscale-like: a global IPv4 server beside a per-link IPv6 one: the
    per-link server is not used for IPv6 either."""
    got = run(tmp_path, mocker, V4 | V6, "nameserver 2001:db8::99\n",
              resolved=[(0, "100.100.100.100"), (2, "2001:db8::1")])
    assert pairs(got.mapping) == [("10.139.1.1", "100.100.100.100"), ("10.139.1.2", "100.100.100.100")]
    assert pairs(got.mapping6) == [("fd09:24ef:4179::a8b:1", None), ("fd09:24ef:4179::a8b:2", None)]


def test_resolved_without_usable_servers_falls_back_and_says_why(tmp_path: Path, mocker: MockerFixture) -> None:
    got = run(tmp_path, mocker, V4 | V6, "nameserver 2001:db8::5\n", resolved=[(0, "127.0.0.53"), (0, "::1")])
    assert pairs(got.mapping6) == [("fd09:24ef:4179::a8b:1", "2001:db8::5"), ("fd09:24ef:4179::a8b:2", "2001:db8::5")]
    assert any(n.startswith("skipping 127.0.0.53") for n in got.notes)
    assert any(n.startswith("skipping ::1") for n in got.notes)


@pytest.mark.parametrize("value", [b"10.139.1.1", b"fd09::1/64", b"fe80::1", b"ff02::1", b"fd09::1; drop"])
def test_bad_ipv6_virtual_address_is_a_config_error(tmp_path: Path, mocker: MockerFixture, value: bytes) -> None:
    with pytest.raises(ConfigError) as caught:
        run(tmp_path, mocker, V4 | {"/qubes-netvm-primary-dns6": value}, "nameserver 192.0.2.1\n")
    assert str(caught.value).startswith("/qubes-netvm-primary-dns6: ")


def test_duplicate_virtual_addresses_count_once(tmp_path: Path, mocker: MockerFixture) -> None:
    entries = V4 | {"/qubes-netvm-primary-dns6": b"fd09::1", "/qubes-netvm-secondary-dns6": b"fd09:0::1"}
    got = run(tmp_path, mocker, entries, "nameserver 2001:db8::1\n")
    assert got.mapping6 is not None
    assert [m.virtual for m in got.mapping6] == [ip_address("fd09::1")]
