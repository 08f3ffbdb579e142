"""The oracle itself: nft failures are errors, never "nothing there"."""

from __future__ import annotations

import pytest

from qubes_netsim.netns import Netns, NftError


@pytest.fixture
def ns(fresh_netns: Netns) -> Netns:
    return fresh_netns


def test_a_missing_object_raises_unless_absence_is_expected(ns: Netns) -> None:
    with pytest.raises(NftError, match="No such file or directory"):
        ns.nft_json("list", "table", "ip", "qubes")
    assert ns.nft_json("list", "table", "ip", "qubes", allow_missing=True) == []


def test_any_other_failure_raises_even_where_absence_is_expected(ns: Netns) -> None:
    with pytest.raises(NftError, match="syntax error"):
        ns.nft_json("list", "tabel", "ip", "qubes", allow_missing=True)


def test_an_existing_object_is_listed(ns: Netns) -> None:
    ns.run(["nft", "add", "table", "ip", "qubes"])
    listed = ns.nft_json("list", "table", "ip", "qubes", allow_missing=True)
    assert [(t["table"]["family"], t["table"]["name"]) for t in listed] == [("ip", "qubes")]
