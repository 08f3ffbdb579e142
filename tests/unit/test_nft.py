"""qubesnet.nft: "absent" and "failed" are told apart, never confused."""

from __future__ import annotations

import errno
from ipaddress import ip_address

import pytest

from qubesnet.errors import ApplyError
from qubesnet.netlink.nftset import SetLookup, build_lookup, element_key
from qubesnet.netlink.nlsock import NetlinkError
from qubesnet.nft import Nft


class FakeContext:
    """libnftables' answers: (rc, output, error), as the binding returns them."""

    def __init__(self, rc: int, error: str = "") -> None:
        self.answer = (rc, "", error)
        self.commands: list[object] = []

    def cmd(self, text: str) -> tuple[int, str, str]:
        self.commands.append(text)
        return self.answer

    def json_cmd(self, data: object) -> tuple[int, object, str]:
        self.commands.append(data)
        return self.answer

    def set_terse_output(self, on: bool) -> None:
        pass


def test_a_listing_of_something_absent_is_none_and_a_failed_one_raises() -> None:
    command = {"list": {"chain": {"family": "ip", "table": "qubes", "name": "dnat-dns"}}}
    assert Nft(context=FakeContext(1, "Error: No such file or directory")).query(command) is None
    with pytest.raises(ApplyError, match="cannot list"):
        Nft(context=FakeContext(1, "Error: Operation not permitted")).query(command)


class ChangingRuleset(FakeContext):
    """The kernel answers EINTR while other transactions commit, then the answer."""

    def __init__(self, busy: int, rc: int, error: str = "") -> None:
        super().__init__(rc, error)
        self.busy = busy

    def json_cmd(self, data: object) -> tuple[int, object, str]:
        self.commands.append(data)
        if self.busy:
            self.busy -= 1
            return 1, "", "Error: Interrupted system call"
        return self.answer


def test_a_listing_interrupted_by_another_commit_is_asked_again() -> None:
    ctx = ChangingRuleset(3, 0)
    command: dict[str, object] = {"list": {"chains": {}}}
    assert Nft(context=ctx).query(command) == []
    assert len(ctx.commands) == 4
    with pytest.raises(ApplyError, match="Interrupted system call"):
        Nft(context=ChangingRuleset(10**6, 0)).query(command)


# --- one element looked up in the kernel (qubesnet.netlink.nftset) ---


def test_element_keys_are_the_kernels_data() -> None:
    """An address in network order; ifname . address with the name padded to IFNAMSIZ."""
    v4, v6 = ip_address("10.137.0.12"), ip_address("fd09::12")
    assert element_key(v4.packed) == bytes([10, 137, 0, 12])
    assert element_key(v4.packed, "vif12.0") == b"vif12.0" + bytes(9) + bytes([10, 137, 0, 12])
    assert len(element_key(v6.packed, "vif12.0")) == 32
    with pytest.raises(ValueError):
        element_key(v4.packed, "x" * 16)


def test_the_lookup_message_names_table_set_and_key() -> None:
    msg = build_lookup("ip6", "qubes", "allowed", b"k" * 32)
    msg.encode()
    data = bytes(msg.data)
    assert data[16] == 10  # nfgen_family: NFPROTO_IPV6
    assert b"qubes\0" in data and b"allowed\0" in data and b"k" * 32 in data


class FakeSocket:
    def __init__(self, error: int = 0) -> None:
        self.error = error

    def request(self, msg: object, msg_type: int, flags: int, what: str, decode: object = None) -> list[bytes]:
        assert msg_type == (10 << 8) | 13 and flags == 0  # NFT_MSG_GETSETELEM, no dump
        if self.error:
            raise NetlinkError(self.error, what)
        return [b"the element"]


def lookup(error: int) -> bool:
    found = SetLookup.__new__(SetLookup)
    found._nl = FakeSocket(error)  # type: ignore[assignment]
    nft = Nft(context=FakeContext(0))
    nft._lookup = found
    return nft.has_element("ip", "qubes", "downstream", ip_address("10.137.0.12"))


def test_an_element_the_kernel_answers_is_present_and_enoent_is_absent() -> None:
    assert lookup(0) is True
    assert lookup(errno.ENOENT) is False


@pytest.mark.parametrize("code", [errno.EPERM, errno.EINVAL, errno.ENOBUFS])
def test_any_other_answer_is_an_error_not_an_absence(code: int) -> None:
    with pytest.raises(ApplyError, match="cannot read set downstream"):
        lookup(code)
