"""One pass: derive the chain, compare it with the kernel's, replace it."""

from __future__ import annotations

import argparse
import json
import logging
import os

from qubesnet import nftjson as j
from qubesnet.constants import CHAIN_DNAT_DNS, QUBES_TABLE
from qubesnet.leave import keep_until_exit
from qubesnet.nft import Nft
from qubesnet.qubesdb import QubesDB
from qubesnet.qubesdb import default_address as qubesdb_address

from . import systemd
from .chain import FAMILY, Mapping, build_replace, build_rules, is_current, render
from .derive import Derived, derive

log = logging.getLogger("qubes-setup-dnat-to-ns")

APPLIED, UNCHANGED = 0, 100
LISTING = {"list": {"chain": {"family": FAMILY, "table": QUBES_TABLE, "name": CHAIN_DNAT_DNS}}}


def _derive(args: argparse.Namespace) -> Derived:
    with QubesDB.open(qubesdb_address(os.environ), args.timeout) as qdb:
        derived = derive(qdb, args.resolv_conf, args.timeout)
    for note in derived.notes:
        log.info("%s", note)
    return derived


def describe(mapping: list[Mapping]) -> list[str]:
    lines = []
    for item in mapping:
        if item.upstream is None:
            lines.append(f"{item.virtual} -> dropped (no usable upstream server)")
        else:
            lines.append(f"{item.virtual} -> {item.upstream.addr} ({item.upstream.origin})")
    return lines


def run_once(args: argparse.Namespace, nft: Nft | None = None) -> int:
    derived = _derive(args)
    rules = build_rules(derived.mapping)
    commands = build_replace(rules)
    if nft is None:
        nft = Nft.shared(dry_run=args.dry_run)
        keep_until_exit(nft)  # its socket closes at exit (see qubesnet.leave)
    current = is_current(nft.query(LISTING, terse=True), rules)
    if args.dry_run:
        print(render(derived.mapping))
        for line in describe(derived.mapping):
            print(f"# {line}")
        print(f"# the kernel's chain is {'already this one' if current else 'different: it would be replaced'}")
        if args.verbose:
            print(json.dumps(j.transaction(commands), indent=1))
        return UNCHANGED if current else APPLIED
    if current:
        log.debug("chain %s already up to date", CHAIN_DNAT_DNS)
        return UNCHANGED
    nft.run(commands, f"{FAMILY} {QUBES_TABLE} {CHAIN_DNAT_DNS}")
    log.info("DNS DNAT updated: %s", "; ".join(describe(derived.mapping)) or "no virtual DNS addresses")
    # Only now that the new chain is committed: the firewall reload must see it.
    if os.path.exists(os.path.join(args.qubes_service_dir, "qubes-firewall")):
        systemd.request("try-reload-or-restart", "qubes-firewall.service")
    return APPLIED


def show_status(args: argparse.Namespace) -> int:
    derived = _derive(args)
    for line in describe(derived.mapping) or ["no virtual DNS addresses in QubesDB"]:
        print(line)
    current = is_current(Nft.shared().query(LISTING, terse=True), build_rules(derived.mapping))
    print(f"kernel chain {FAMILY} {QUBES_TABLE} {CHAIN_DNAT_DNS}: "
          + ("up to date" if current else "differs (run qubes-setup-dnat-to-ns to apply)"))
    return 0


def status_data(timeout: float, resolv_conf: str = "/etc/resolv.conf") -> dict[str, object]:
    """What --status shows, as data (for vif-route-qubes status)."""
    with QubesDB.open(qubesdb_address(os.environ), timeout) as qdb:
        derived = derive(qdb, resolv_conf, timeout)
    current = is_current(Nft.shared().query(LISTING, terse=True), build_rules(derived.mapping))
    lines = describe(derived.mapping) or ["no virtual DNS addresses in QubesDB"]
    lines.append(f"kernel chain {FAMILY} {QUBES_TABLE} {CHAIN_DNAT_DNS}: " + ("up to date" if current else "differs"))
    return {"lines": lines, "current": current,
            "mappings": [{"virtual": str(m.virtual), "upstream": str(m.upstream.addr) if m.upstream else None,
                          "origin": m.upstream.origin if m.upstream else None} for m in derived.mapping]}
