"""One pass: derive the chains of both families, compare them with the
kernel's, replace what differs in one transaction."""

from __future__ import annotations

import json
import os

from qubesnet import nftjson as j
from qubesnet.constants import CHAIN_DNAT_DNS, CHAIN_DNS_REFUSE, QUBES_TABLE
from qubesnet.leave import keep_until_exit
from qubesnet.log import get_logger
from qubesnet.nft import Nft
from qubesnet.qubesdb import QubesDB
from qubesnet.qubesdb import default_address as qubesdb_address

from . import systemd
from .chain import (
    Translation,
    build_refusals,
    build_removal,
    build_replace,
    build_rules,
    is_current,
    render,
)
from .derive import Derived, derive
from .exitcodes import ExitCode

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds on the path that changes nothing
    from typing import Any

    from .args import Args

log = get_logger("qubes-setup-dnat-to-ns")

APPLIED, UNCHANGED = ExitCode.APPLIED, ExitCode.UNCHANGED
FAMILY_NAME = {"ip": "IPv4", "ip6": "IPv6"}


def _derive(args: Args) -> Derived:
    with QubesDB.open(qubesdb_address(os.environ), args.timeout) as qdb:
        derived = derive(qdb, args.resolv_conf, args.timeout)
    for note in derived.notes:
        log.info("%s", note)
    return derived


def families(derived: Derived) -> list[tuple[str, list[Translation] | None]]:
    """(family, its mapping or None when the family is not served)."""
    return [("ip", derived.mapping), ("ip6", derived.mapping6)]


def query_chain(nft: Nft, family: str, name: str) -> list[dict[str, Any]] | None:
    command = {"list": {"chain": {"family": family, "table": QUBES_TABLE, "name": name}}}
    return nft.query(command, terse=True)


def plan_family(nft: Nft, family: str, mapping: list[Translation] | None) -> list[j.Json]:
    """The commands bringing one family's chains to ``mapping`` ([] if they
    already are). Reads the kernel's chains; changes nothing."""
    listed = {name: query_chain(nft, family, name) for name in (CHAIN_DNAT_DNS, CHAIN_DNS_REFUSE)}
    if mapping is None:
        # Not served (no virtual addresses of this family): none of our chains.
        return build_removal(family) if any(v is not None for v in listed.values()) else []
    rules, refusals = build_rules(mapping, family), build_refusals(mapping, family)
    if is_current(listed[CHAIN_DNAT_DNS], rules, CHAIN_DNAT_DNS) and \
            is_current(listed[CHAIN_DNS_REFUSE], refusals, CHAIN_DNS_REFUSE):
        return []
    return build_replace(rules, refusals, family)


def describe(mapping: list[Translation], family: str = "ip") -> list[str]:
    lines = []
    for item in mapping:
        if item.upstream is None:
            lines.append(f"{item.virtual} -> refused (no usable {FAMILY_NAME[family]} upstream server)")
        else:
            lines.append(f"{item.virtual} -> {item.upstream.addr} ({item.upstream.origin})")
    return lines


def describe_all(derived: Derived) -> list[str]:
    return [line for family, mapping in families(derived) if mapping for line in describe(mapping, family)]


def run_once(args: Args, nft: Nft | None = None) -> int:
    derived = _derive(args)
    if nft is None:
        nft = Nft.shared(dry_run=args.dry_run)
        keep_until_exit(nft)  # its socket closes at exit (see qubesnet.leave)
    plans = {family: plan_family(nft, family, mapping) for family, mapping in families(derived)}
    commands = [command for family_commands in plans.values() for command in family_commands]
    if args.dry_run:
        for family, mapping in families(derived):
            if mapping is not None:
                print(render(mapping, family))
                for line in describe(mapping, family):
                    print(f"# {line}")
            state = "different: it would be replaced" if plans[family] else "already this one"
            if mapping is None:
                state = "ours to remove: they would be removed" if plans[family] else "absent, as they should be"
            print(f"# the kernel's {family} chains are {state}")
        if args.verbose:
            print(json.dumps(j.transaction(commands), indent=1))
        return APPLIED if commands else UNCHANGED
    if not commands:
        log.debug("chains %s and %s already up to date", CHAIN_DNAT_DNS, CHAIN_DNS_REFUSE)
        return UNCHANGED
    # Both families in one transaction: all of it or nothing.
    nft.run(commands, f"{QUBES_TABLE} {CHAIN_DNAT_DNS}")
    log.info("DNS DNAT updated: %s", "; ".join(describe_all(derived)) or "no virtual DNS addresses")
    # Only now that the new chains are committed: the firewall reload must see them.
    if os.path.exists(os.path.join(args.qubes_service_dir, "qubes-firewall")):
        systemd.request("try-reload-or-restart", "qubes-firewall.service")
    return APPLIED


def status_lines(derived: Derived, nft: Nft) -> tuple[list[str], bool]:
    """What --status prints, and whether the kernel's chains are current."""
    lines: list[str] = []
    current = True
    for family, mapping in families(derived):
        name = FAMILY_NAME[family]
        if mapping is None:
            lines.append(f"{name}: no virtual DNS addresses in QubesDB")
        else:
            lines.append(f"{name}:")
            lines += [f"  {line}" for line in describe(mapping, family) or ["no virtual DNS addresses in QubesDB"]]
        family_current = not plan_family(nft, family, mapping)
        current = current and family_current
        lines.append(f"  kernel chains {family} {QUBES_TABLE} {CHAIN_DNAT_DNS}, {CHAIN_DNS_REFUSE}: "
                     + ("up to date" if family_current else "differ (run qubes-setup-dnat-to-ns to apply)"))
    return lines, current


def show_status(args: Args) -> int:
    lines, _ = status_lines(_derive(args), Nft.shared())
    for line in lines:
        print(line)
    return 0


def status_data(timeout: float, resolv_conf: str = "/etc/resolv.conf") -> dict[str, object]:
    """What --status shows, as data (for vif-route-qubes status)."""
    with QubesDB.open(qubesdb_address(os.environ), timeout) as qdb:
        derived = derive(qdb, resolv_conf, timeout)
    lines, current = status_lines(derived, Nft.shared())
    mappings = [{"family": family, "virtual": str(m.virtual),
                 "upstream": str(m.upstream.addr) if m.upstream else None,
                 "origin": m.upstream.origin if m.upstream else None}
                for family, mapping in families(derived) for m in mapping or []]
    return {"lines": lines, "current": current, "mappings": mappings}
