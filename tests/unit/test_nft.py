"""qubesnet.nft: "absent" and "failed" are told apart, never confused."""

from __future__ import annotations

import pytest

from qubesnet.errors import ApplyError
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


def test_an_element_found_is_present_and_the_lookup_names_it() -> None:
    ctx = FakeContext(0)
    assert Nft(context=ctx).has_element("ip", "qubes", "allowed", "10.137.0.12", "vif12.0")
    assert ctx.commands == ['get element ip qubes allowed { "vif12.0" . 10.137.0.12 }']


def test_an_element_the_kernel_does_not_have_is_absent() -> None:
    ctx = FakeContext(1, "Error: Could not process rule: No such file or directory\nget element ...\n")
    assert not Nft(context=ctx).has_element("ip6", "qubes", "downstream", "fd09::12")
    assert ctx.commands == ["get element ip6 qubes downstream { fd09::12 }"]


@pytest.mark.parametrize("error", ["Error: Could not process rule: Operation not permitted", ""])
def test_any_other_failure_is_an_error_not_an_absence(error: str) -> None:
    with pytest.raises(ApplyError, match="cannot read set allowed"):
        Nft(context=FakeContext(1, error)).has_element("ip", "qubes", "allowed", "10.137.0.12", "vif12.0")


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

    def cmd(self, text: str) -> tuple[int, str, str]:
        self.commands.append(text)
        if self.busy:
            self.busy -= 1
            return 1, "", "Error: Could not process rule: Interrupted system call"
        return self.answer


def test_a_lookup_interrupted_by_another_commit_is_asked_again() -> None:
    ctx = ChangingRuleset(3, 0)
    assert Nft(context=ctx).has_element("ip", "qubes", "downstream", "10.137.0.12")
    assert len(ctx.commands) == 4
    never = ChangingRuleset(10**6, 0)
    with pytest.raises(ApplyError, match="Interrupted system call"):
        Nft(context=never).has_element("ip", "qubes", "downstream", "10.137.0.12")
