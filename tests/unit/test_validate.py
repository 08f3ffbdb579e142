"""qubesnet.validate: what is accepted and what is refused, and why."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest

from qubesnet.errors import ConfigError
from qubesnet.validate import (
    decode_text,
    parse_address_list,
    parse_host_address,
    parse_ifname,
    parse_mac,
    parse_service_flag,
    parse_vif_name,
    parse_xenbus_path,
)


@pytest.mark.parametrize(
    ("name", "domid", "devid", "metric"),
    [("vif0.0", 0, 0, 32752), ("vif12.0", 12, 0, 32740), ("vif32752.3", 32752, 3, 0), ("vif1.10", 1, 10, 32751)],
)
def test_vif_names(name: str, domid: int, devid: int, metric: int) -> None:
    vif = parse_vif_name("vif", name)
    assert (vif.domid, vif.devid, vif.metric) == (domid, devid, metric)


@pytest.mark.parametrize(
    "name",
    ["", "vif", "vif1", "vif1.", "vif.1", "vif01.0", "vif1.00", "vif32753.0", "vif99999999.0", "eth0",
     "vif1.0 ", " vif1.0", "vif1.0\n", "vif1.0;reboot", "vif1.0/..", "VIF1.0", "vif1.0.0", "vif1234567.12"],
)
def test_bad_vif_names(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_vif_name("vif", name)
    assert str(info.value).startswith("vif: ")
    assert "\n" not in str(info.value)


def test_domid_too_large_says_so() -> None:
    with pytest.raises(ConfigError, match="larger than 32752"):
        parse_vif_name("vif", "vif32753.0")


@pytest.mark.parametrize("name", ["vif-work", "eth1", "vif12.0", "a", "x_y.z", "abcdefghijklmno"])
def test_ifnames(name: str) -> None:
    assert parse_ifname("vifname", name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a b", "-x", "abcdefghijklmnop", "a\nb", "a;b", 'a"b', "ä"])
def test_bad_ifnames(name: str) -> None:
    with pytest.raises(ConfigError):
        parse_ifname("vifname", name)


@pytest.mark.parametrize("mac", ["00:16:3e:5e:6c:0c", "fe:ff:ff:ff:ff:fe", "02:00:00:00:00:01"])
def test_macs(mac: str) -> None:
    assert parse_mac("mac", mac) == mac


@pytest.mark.parametrize(
    "mac",
    ["", "00:16:3E:5E:6C:0C", "00:16:3e:5e:6c", "00:16:3e:5e:6c:0c:00", "01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff",
     "00:00:00:00:00:00", "00-16-3e-5e-6c-0c", "0016.3e5e.6c0c", "zz:16:3e:5e:6c:0c", "00:16:3e:5e:6c:0c\n"],
)
def test_bad_macs(mac: str) -> None:
    with pytest.raises(ConfigError, match=r"^mac: "):
        parse_mac("mac", mac)


@pytest.mark.parametrize("path", ["backend/vif/12/0", "/local/domain/1/backend/vif/12/0", "a", "device-model/0"])
def test_xenbus_paths(path: str) -> None:
    assert parse_xenbus_path("XENBUS_PATH", path) == path


@pytest.mark.parametrize(
    "path", ["", "/", "backend//vif", "backend/vif/", "back end", "../x", "a/./b", "a\0b", "x" * 3073]
)
def test_bad_xenbus_paths(path: str) -> None:
    with pytest.raises(ConfigError):
        parse_xenbus_path("XENBUS_PATH", path)


def test_address_list_takes_the_first_of_each_family() -> None:
    parsed = parse_address_list("ip", "10.137.0.5 fd09:24ef:4179::a89:5 10.137.0.6")
    assert parsed.ipv4 == IPv4Address("10.137.0.5")
    assert parsed.ipv6 == IPv6Address("fd09:24ef:4179::a89:5")
    assert parsed.ignored == (IPv4Address("10.137.0.6"),)
    assert parsed.used == (IPv4Address("10.137.0.5"), IPv6Address("fd09:24ef:4179::a89:5"))


def test_empty_address_list() -> None:
    parsed = parse_address_list("ip", "")
    assert parsed.used == () and parsed.ipv4 is None and parsed.ipv6 is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("garbage", "characters"),
        ("10.137.0.5 }; flush ruleset", "characters"),
        ("10.137.0.5\tfd09::5", "characters"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "reserved"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "this network"),
        ("::", "unspecified"),
        ("::ffff:10.137.0.5", "IPv4-mapped"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("10.137.0.0/24", "characters"),
        ("010.137.000.005", "bad address"),
        ("10.137.0", "bad address"),
        ("1.2.3.4.5", "bad address"),
        (" ".join(["10.137.0.5"] * 9), "at most 8"),
    ],
)
def test_bad_address_lists(value: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_address_list("backend/vif/12/0/ip", value)
    message = str(info.value)
    assert message.startswith("backend/vif/12/0/ip: ")
    assert reason in message


def test_link_local_allowed_where_asked() -> None:
    assert parse_host_address("gw6", "fe80::1", allow_link_local=True) == IPv6Address("fe80::1")


def test_decode_text() -> None:
    assert decode_text("k", b"abc") == "abc"
    with pytest.raises(ConfigError, match="not ASCII"):
        decode_text("k", b"\xff\xfe")
    with pytest.raises(ConfigError, match="not ASCII"):
        decode_text("k", "ä")
    with pytest.raises(ConfigError, match="control characters"):
        decode_text("k", b"a\nb")
    with pytest.raises(ConfigError, match="at most 4096"):
        decode_text("k", b"a" * 4097)


@pytest.mark.parametrize(
    ("raw", "default", "expected"),
    [(b"1", False, True), (b"0", True, False), (None, True, True), (None, False, False)],
)
def test_service_flags(raw: bytes | None, default: bool, expected: bool) -> None:
    assert parse_service_flag("/qubes-service/x", raw, default) is expected


@pytest.mark.parametrize("raw", [b"", b"yes", b"true", b"2", b"1\n", b" 1"])
def test_bad_service_flags(raw: bytes) -> None:
    with pytest.raises(ConfigError, match=r"^/qubes-service/x: "):
        parse_service_flag("/qubes-service/x", raw, False)


def test_long_bad_values_are_cut_in_messages() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_host_address("ip", "1" * 4000)
    message = str(caught.value)
    assert len(message) < 160 and "(4000 characters)" in message and message.startswith("ip: ")


def test_bad_service_flag_is_shown_as_text() -> None:
    with pytest.raises(ConfigError, match=r"not 'yes'$"):
        parse_service_flag("/qubes-service/x", b"yes", False)


@pytest.mark.parametrize("name", ["all", "default"])
def test_ifname_never_names_the_kernels_shared_settings(name: str) -> None:
    with pytest.raises(ConfigError, match=r"vifname: interface name .* is reserved"):
        parse_ifname("vifname", name)
