"""make mutation: hand-picked mutants, each of which the tests must kill.

Every mutant is one deliberate mistake (an exact snippet replaced by
another): in the vif core's planner, applier, description or kernel reader
(MUTANTS), and beyond it (BREADTH: the DNS path, the dispatcher hook,
validation, inputs, locks, the mapped NAT table, failure reporting),
made in a temporary copy of the tree, never in the working tree. The copy's
unit tests listed for the mutant run first; only if they all pass do the
listed namespace-tier tests run (root: they build network namespaces).
The table says, for every mutant, which tier killed it; a mutant that
survives both fails the run (exit 1): either a test is missing, or the
mutant is wrong. A snippet that does not occur exactly once means the list
is stale: the run stops (exit 2) rather than test a mutant that is not there.

Each copy gets a shadow virtual environment whose interpreter sees the
copy's packages and the real venv's site-packages, but not the real venv's
editable install of the working tree; the entry points the namespace tier
runs (found next to ``sys.executable``, and under ``$QUBES_NETSIM_BIN``) are
wrappers that import from the copy. A probe checks, before any mutant, that
each of the three ways the tests reach the code under test (pytest itself,
the entry points, ``sys.executable`` subprocesses such as
``fault_runner.py``) really imports the copy.

    .venv/bin/python tools/mutation.py [--only ID ...] [--list] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import venv
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IGNORED = shutil.ignore_patterns(
    ".git", ".venv", ".bench-venv", "__pycache__", "*.pyc", ".pytest_cache", ".mypy_cache", ".ruff_cache",
    ".hypothesis", "build", "dist", "*.egg-info", "_install",
)
ENTRY_POINTS = {"vif-route-qubes": "vif_route_qubes.cli", "qubes-setup-dnat-to-ns": "setup_dnat_to_ns.cli"}
PYTEST = ("-m", "pytest", "-x", "-q", "-p", "no:cacheprovider")
TIER_TIMEOUT = 600.0

DIFF = "vif_route_qubes/diff.py"
KINDS = "vif_route_qubes/kinds.py"
APPLY = "vif_route_qubes/apply.py"
STEPS = "vif_route_qubes/steps.py"
DESCRIBE = "vif_route_qubes/describe.py"
OBSERVE = "vif_route_qubes/observe.py"
HANDLERS = "vif_route_qubes/handlers.py"
LAYOUT = "qubesnet/layout.py"

U_DESCRIBE = "tests/unit/test_describe.py"
U_DIFF = "tests/unit/test_diff.py"
U_APPLY = "tests/unit/test_apply.py"
U_KILLS = "tests/unit/test_mutation_kills.py"
N_ONLINE = "tests/integration/test_vif_online.py"
N_LIFECYCLE = "tests/integration/test_vif_lifecycle.py"
N_RACE = "tests/integration/test_vif_race.py"
N_ROLLBACK = "tests/integration/test_vif_rollback.py"
N_MAPPED = "tests/integration/test_vif_mapped.py::test_a_changed_mapping_rebuilds_the_namespace"
N_ANTISPOOF = "tests/integration/test_vif_antispoof.py"
N_KILLS = "tests/integration/test_vif_mutation_kills.py"
N_ADMIN = "tests/integration/test_admin.py"
U_SURVEY = "tests/unit/test_survey.py"
U_EVENT = "tests/unit/test_event.py"
N_PURGE_RACE = "tests/integration/test_vif_purge_race.py"
EVENT = "vif_route_qubes/event.py"
SURVEY = "vif_route_qubes/survey.py"
VERDICTS = "vif_route_qubes/verdicts.py"


@dataclass(frozen=True)
class Edit:
    file: str  # relative to the tree
    old: str  # must occur exactly once
    new: str


@dataclass(frozen=True)
class Mutant:
    id: str
    description: str
    edits: tuple[Edit, ...]
    unit: tuple[str, ...]  # pytest node ids or files: the first chance
    namespace: tuple[str, ...] = ()  # the second chance (root)


def mutant(id_: str, description: str, file: str, old: str, new: str, unit: tuple[str, ...],
           namespace: tuple[str, ...] = (), also: tuple[Edit, ...] = ()) -> Mutant:
    return Mutant(id_, description, (Edit(file, old, new), *also), unit, namespace)


MUTANTS: tuple[Mutant, ...] = (
    mutant("offline-keeps-nothing", "plan_offline removes no set element",
           KINDS, "return obj in obs.elements and obj not in kept_in_downstream(state, obs)", "return False",
           (U_DIFF,), (N_LIFECYCLE,)),
    mutant("offline-ignores-routed-elsewhere", "downstream never kept for an address another vif routes",
           KINDS, "e.kind == SET_DOWNSTREAM and e.addr in obs.routed_elsewhere)",
           "e.kind == SET_DOWNSTREAM and False)",
           (U_DIFF,), (N_LIFECYCLE, N_RACE)),
    mutant("downstream-kept-always", "offline keeps every downstream element",
           KINDS, "e.kind == SET_DOWNSTREAM and e.addr in obs.routed_elsewhere)",
           "e.kind == SET_DOWNSTREAM)",
           (U_DIFF,), (N_LIFECYCLE, N_ANTISPOOF)),
    mutant("metric-off-by-one", "describe: route metric 32752 - domid + 1",
           DESCRIBE, "routes=tuple(Route(a, inp.vif.metric) for a in routed)",
           "routes=tuple(Route(a, inp.vif.metric + 1) for a in routed)",
           (U_DESCRIBE, U_DIFF), (N_ONLINE,)),
    mutant("link-up-before-elements", "plan_online: SetLink up before the nftables transaction (the link's rank)",
           KINDS, 'name, rank = "link", 30', 'name, rank = "link", 18',
           (U_DIFF, U_APPLY), (N_KILLS, N_ONLINE)),
    mutant("rollback-without-fail-closed", "Applier.rollback does not take the link down first",
           APPLY, "self.gw.rtnl.set_link(self.fail_closed, up=False)", "pass",
           (U_APPLY,), (N_ROLLBACK,)),
    mutant("undo-not-recorded", "Applier.apply never appends inverses to the undo log",
           APPLY, "self.undo.append(inverse)", "pass",
           (U_APPLY,), (N_ROLLBACK,)),
    mutant("sysctl-inverse-keeps-new", "SetSysctl.inverse restores the new value, not the previous",
           STEPS, "return SetSysctl(self.key, self.previous, self.value)",
           "return SetSysctl(self.key, self.value, self.previous)",
           (U_DIFF, U_APPLY), (N_ROLLBACK,)),
    mutant("online-adds-no-elements", "plan_online: missing = [] (no set element added)",
           KINDS, "        return obj not in obs.elements\n", "        return False\n",
           (U_DIFF,), (N_ONLINE,)),
    mutant("online-readds-present", "plan_online: missing = all elements, so its undo removes what it found",
           KINDS, "        return obj not in obs.elements\n", "        return True\n",
           (U_DIFF,), (N_ROLLBACK,)),
    mutant("offline-keeps-sysctls", "plan_offline does not restore the sysctls online set",
           KINDS, "return current == obj.value and default is not None and default != current", "return False",
           (U_DIFF,), (N_LIFECYCLE, N_KILLS)),
    mutant("offline-no-rename-back", "plan_offline does not rename the vif back to libxl's name",
           DIFF, "if link is not None and not namespace.exists and link.name == state.ifname != state.vif:",
           "if False:",
           (U_DIFF,), (N_LIFECYCLE, N_KILLS)),
    mutant("offline-removes-unowned-addresses",
           "offline removes every host address on the link, not only the described gateways",
           KINDS, "        return state.addresses\n",
           "        return state.addresses + tuple(a for a in obs.addresses if a not in state.addresses)\n",
           (U_DIFF, U_KILLS), (N_LIFECYCLE, N_KILLS),
           also=(Edit(OBSERVE, "addresses = on_link & set(state.addresses)",
                      "addresses = {a for a in on_link if a.prefixlen == a.addr.max_prefixlen}"),)),
    mutant("namespace-never-rebuilt", "plan_namespace keeps a namespace built for another mapping",
           DIFF, "rebuilt = facts.exists and facts.table_present and not facts.table_matches",
           "rebuilt = False",
           (U_DIFF,), (N_MAPPED,)),
    mutant("harden-ignored", "describe: the hardening sysctls are never set",
           DESCRIBE, "    if inp.harden:\n", "    if False:\n",
           (U_DESCRIBE,), (N_ONLINE,)),
    mutant("no-base-antispoof", "build_antispoof returns [] (missing anti-spoofing objects never created)",
           LAYOUT, "    if table and not missing_sets and not missing_chains:\n        return []\n",
           "    return []\n",
           (U_DIFF,), (N_LIFECYCLE,)),
    mutant("ipv6-routed-when-disabled", "describe routes IPv6 on a vif where IPv6 is disabled",
           DESCRIBE, "routed = tuple(a for a in addrs if a.version == 4 or (ipv6_on_vif and inp.netvm_ipv6))",
           "routed = tuple(a for a in addrs if a.version == 4 or env.ipv6_kernel)",
           (U_DESCRIBE,), (N_ONLINE,)),
    mutant("nft-change-never-undone", "NftChange.inverse is None: a failed online leaves its elements",
           STEPS, "return NftChange(f\"undo {self.what}\", self.undo, self.commands) if self.undo else None",
           "return None",
           (U_DIFF, U_APPLY), (N_ROLLBACK,)),
    mutant("best-effort-stops", "offline's best effort stops at the first failing step",
           APPLY, "                errors.append(str(exc))\n", "                raise\n",
           (U_APPLY,), (N_LIFECYCLE,)),
    mutant("set-link-ignores-group", "the SetLink handler leaves the interface group alone",
           HANDLERS, "gw.rtnl.set_link(s.ifindex, up=s.up, group=s.group)", "gw.rtnl.set_link(s.ifindex, up=s.up)",
           (U_APPLY,), (N_ANTISPOOF,)),
    mutant("observe-nothing-routed-elsewhere", "observe never reports a route of another interface",
           OBSERVE, "                    elsewhere.add(addr)\n", "                    pass\n",
           (U_KILLS,), (N_LIFECYCLE, N_RACE)),
    mutant("observe-all-elements-present", "observe reads every described set element as present",
           OBSERVE,
           "        if gw.nft.has_element(family, QUBES_TABLE, element.kind, element.addr, element.ifname):\n",
           "        if True:\n",
           (U_KILLS,), (N_ONLINE,)),
    mutant("undo-deletes-shared-objects", "an online's undo deletes the anti-spoofing objects it created",
           KINDS, "        return [NftCommands(tuple(self._commands(obj, obs)))]\n",
           "        o = obs.base[obj]\n"
           "        return [NftCommands(tuple(self._commands(obj, obs)), tuple(build_antispoof(obj, table=o.table, "
           "sets=o.sets, chains=o.chains, present=False)))]\n",
           (U_DIFF, "tests/unit/test_properties.py::test_undo_leaves_other_vifs_protected"), (N_ROLLBACK,)),
    mutant("failed-read-reads-absent", "a failed lookup in a set reads as \"not there\"",
           "qubesnet/netlink/nftset.py", "            if exc.code == errno.ENOENT:", "            if True:",
           ("tests/unit/test_nft.py",), (N_ROLLBACK,)),
    mutant("neighbour-undo-deletes", "the undo of a replaced neighbour entry deletes it",
           STEPS, "        if self.present and self.previous is not None:\n", "        if False:\n",
           ("tests/unit/test_properties.py::test_undo_of_a_replaced_neighbour_restores_it",), (N_ONLINE,)),
    # status, reconcile and watch
    mutant("ipv6-routed-without-netvm-ipv6", "describe routes clients' IPv6 when IPv6 is off for the netvm",
           DESCRIBE, "(ipv6_on_vif and inp.netvm_ipv6)", "ipv6_on_vif",
           (U_DESCRIBE,), (N_ADMIN,)),
    mutant("subtract-keeps-nothing", "a gateway that went away from QubesDB stays on every vif",
           DESCRIBE, "addresses=tuple(a for a in old.addresses if a not in new.addresses),", "addresses=(),",
           (U_DESCRIBE,), (N_ADMIN,)),
    mutant("orphans-never-found", "status and reconcile never see kernel state no XenStore vif claims",
           SURVEY,
           'found.append(VifReport(name, domid, devid, None, addrs, None, None, mapped, "orphan", tuple(detail)))',
           "pass",
           (U_SURVEY,), (N_ADMIN,)),
    mutant("drift-reads-ok", "status calls a drifted vif ok",
           VERDICTS, 'return "drift" if drift else "ok"', 'return "ok"',
           (U_SURVEY,), (N_ADMIN,)),
    mutant("purge-before-locks", "the conntrack purge runs before the event's locks, not as the plan's step",
           EVENT, "    gw = make_gateways(Conntrack())\n",
           "    gw = make_gateways(Conntrack())\n    gw.conntrack.purge(inp.addresses.used)\n",
           (U_EVENT,), (N_PURGE_RACE,),
           also=(Edit(KINDS, "        return [PurgeConntrack(obj)]\n", "        return []\n"),
                 Edit(DIFF, "        steps.append(PurgeConntrack(state.purge))\n", "        pass\n"))),
    mutant("reconcile-reruns-hooks-and-purge", "reconcile runs hooks and purges connections of running clients",
           DIFF, "    if not is_unconfigured(state, obs):\n        skip += (RunHooks, PurgeConntrack)\n", "",
           (U_DIFF,), (N_ADMIN,)),
)


# --- issue 16: breadth beyond the vif core -------------------------------------------
# (Kept apart from MUTANTS so that the two lists change independently.)

UPSTREAMS = "setup_dnat_to_ns/upstreams.py"
CHAIN = "setup_dnat_to_ns/chain.py"
DERIVE = "setup_dnat_to_ns/derive.py"
DNS_RUN = "setup_dnat_to_ns/run.py"
NMHOOK = "dispatcher/qubes-nmhook"
VALIDATE = "qubesnet/validate.py"
INPUTS = "vif_route_qubes/inputs.py"
LOCKS = "qubesnet/locks.py"
MAPPED = "vif_route_qubes/mapped.py"
CLI = "vif_route_qubes/cli.py"

U_DNS_PLAN = "tests/unit/test_dnat_plan.py"
U_DNS_DERIVE = "tests/unit/test_dnat_derive.py"
U_DNS_KILLS = "tests/unit/test_dns_kills.py"
U_GLUE = "tests/unit/test_glue.py"
U_VALIDATE = "tests/unit/test_validate.py"
U_INPUTS = "tests/unit/test_inputs.py"
U_LOCKS = "tests/unit/test_locks.py"
U_EDGE_KILLS = "tests/unit/test_edge_kills.py"
U_MAPPED = "tests/unit/test_mapped.py"
U_CLI = "tests/unit/test_cli.py"
N_DNS = "tests/integration/test_dnat_dns.py"
N_MAPPED_ALL = "tests/integration/test_vif_mapped.py"
N_MAPPED_ICMP = N_MAPPED_ALL + "::test_icmp_errors_that_reveal_the_real_address_never_reach_the_client"
N_MAPPED_PMTU = N_MAPPED_ALL + "::test_fragmentation_needed_reaches_the_client"

BREADTH: tuple[Mutant, ...] = (
    # --- the DNS path (setup_dnat_to_ns) -------------------------------------------
    mutant("dns-link-servers-beside-global", "resolved's per-link servers are kept beside its global ones",
           UPSTREAMS, "    if any(not per_link for per_link, _ in servers):\n", "    if False:\n",
           (U_DNS_PLAN, U_DNS_KILLS), (N_DNS,)),
    mutant("dns-link-servers-instead-of-global", "resolved's per-link servers are used, its global ones dropped",
           UPSTREAMS, "servers = [item for item in servers if not item[0]]",
           "servers = [item for item in servers if item[0]]",
           (U_DNS_PLAN, U_DNS_KILLS), (N_DNS,)),
    mutant("dns-other-family-servers-used", "usable() keeps servers of the other IP version",
           UPSTREAMS, "        if server.addr.version != version:\n            continue\n", "",
           (U_DNS_PLAN, U_DNS_DERIVE, U_DNS_KILLS), (N_DNS,)),
    mutant("dns-duplicates-kept", "usable() keeps a server listed twice",
           UPSTREAMS, "elif server.addr not in seen:", "elif True:",
           (U_DNS_PLAN, U_DNS_KILLS), (N_DNS,)),
    mutant("dns-no-cycling", "every virtual address goes to the first upstream (no pairing in order)",
           CHAIN, "upstreams[i % len(upstreams)]", "upstreams[0]",
           (U_DNS_PLAN, U_DNS_KILLS), (N_DNS,)),
    mutant("dns-unpaired-left-untranslated", "virtual addresses beyond the number of upstreams get no rule",
           CHAIN, "for i, v in enumerate(virtual)]", "for i, v in enumerate(virtual[:len(upstreams)])]",
           (U_DNS_PLAN, U_DNS_KILLS), (N_DNS,)),
    mutant("dns-refusal-chain-empty", "a virtual address without an upstream is redirected but never refused",
           CHAIN, "for item in mapping if item.upstream is None\n", "for item in mapping if False\n",
           (U_DNS_PLAN, U_DNS_KILLS), (N_DNS,)),
    mutant("dns-refusal-udp-dropped",
           "UDP to a virtual address without an upstream is dropped (a time-out), not refused",
           CHAIN, 'j.reject_tcp_reset() if proto == "tcp" else UNREACHABLE[family]',
           'j.reject_tcp_reset() if proto == "tcp" else j.DROP',
           (U_DNS_PLAN, U_DNS_KILLS), (N_DNS,)),
    mutant("dns-refused-leaks-upstream", "DNS to a virtual address without an upstream is accepted untranslated",
           CHAIN, "j.dnat(str(item.upstream.addr)) if item.upstream else REDIRECT",
           "j.dnat(str(item.upstream.addr)) if item.upstream else j.ACCEPT",
           (U_DNS_PLAN, U_DNS_KILLS), (N_DNS,)),
    mutant("dns-replace-appends", "the replacement adds its rules without deleting the old chain first",
           CHAIN,
           "            j.delete(j.chain(family, QUBES_TABLE, name)),\n            j.add(_base(family, name)),\n",
           "",
           (U_DNS_PLAN, U_DNS_KILLS), (N_DNS,)),
    mutant("dns-current-ignores-hook", "a chain with our rules but another hook or priority counts as current",
           CHAIN, "parsed == (HOOKS[name], rules)", "parsed[1] == rules",
           (U_DNS_PLAN, U_DNS_KILLS), (N_DNS,)),
    mutant("dns-resolved-unusable-kept", "resolved's servers are used even when none is usable (no fallback)",
           DERIVE, "if any(usable(servers, version)[0] for version in (4, 6)):", "if True:",
           (U_DNS_DERIVE, U_DNS_KILLS), (N_DNS,)),
    mutant("dns-ipv6-always-served", "the ip6 chains are ours even without IPv6 virtual addresses",
           DERIVE, "plan_mapping(virtual6, kept6) if virtual6 else None", "plan_mapping(virtual6, kept6)",
           (U_DNS_DERIVE, U_DNS_KILLS), (N_DNS, "tests/integration/test_dnat_ipv6.py")),
    mutant("dns-never-unchanged", "setup-dnat-to-ns reloads (exit 0) even when the chains are current",
           DNS_RUN, "    if not commands:\n", "    if False:\n",
           (U_DNS_KILLS,), (N_DNS,)),
    mutant("dns-firewall-never-reloaded", "no reload of qubes-firewall after a change",
           DNS_RUN, '        systemd.request("try-reload-or-restart", "qubes-firewall.service")\n',
           "        pass\n",
           (U_DNS_KILLS,), (N_DNS,)),
    # --- the NetworkManager dispatcher hook -----------------------------------------
    mutant("nmhook-skips-reapply", "the dispatcher hook ignores `reapply` (NetworkManager 1.42's DNS change)",
           NMHOOK, "|hostname|connectivity-change) exit 0 ;;", "|hostname|connectivity-change|reapply) exit 0 ;;",
           (U_GLUE,), ()),
    mutant("nmhook-restarts-proxy-unchanged", "the hook restarts the updates proxy although nothing changed (100)",
           NMHOOK, 'if [ "$status" -eq 0 ]; then', 'if [ "$status" -ne 1 ]; then',
           (U_GLUE,), ()),
    mutant("nmhook-unbounded", "the hook waits for the tool without a time limit",
           NMHOOK, 'timeout -k 5 "$limit" "$setup_dnat"', '"$setup_dnat"',
           (U_GLUE,), ()),
    mutant("nmhook-runs-on-pre-up", "the hook runs the tool on pre-up (DNS not in effect yet)",
           NMHOOK, "    pre-up|pre-down|", "    pre-down|",
           (U_GLUE,), ()),
    # --- validation of what crosses the trust boundary -------------------------------
    mutant("validate-domid-off-by-one", "domid 32753 accepted (metric 32752 - domid would be 0... or less)",
           VALIDATE, "if domid > MAX_DOMID:", "if domid > MAX_DOMID + 1:",
           (U_VALIDATE,), ()),
    mutant("validate-multicast-mac", "a multicast MAC is accepted",
           VALIDATE, "if int(value[:2], 16) & 1:", "if False:",
           (U_VALIDATE,), ()),
    mutant("validate-this-network", "0.0.0.0/8 accepted as a host address",
           VALIDATE, "if addr in THIS_NETWORK:", "if False:",
           (U_VALIDATE,), ()),
    mutant("validate-ipv4-mapped", "an IPv4-mapped IPv6 address is accepted as a host address",
           VALIDATE, "elif addr.ipv4_mapped is not None:", "elif False:",
           (U_VALIDATE,), ()),
    mutant("validate-last-ipv4-wins", "the last IPv4 address of the ip key is used, not the first",
           VALIDATE, "if isinstance(addr, IPv4Address) and ipv4 is None:", "if isinstance(addr, IPv4Address):",
           (U_VALIDATE,), ()),
    mutant("validate-sysctl-scope-name", "vifname `all`/`default` accepted (every interface's sysctls)",
           VALIDATE, "    if value in SYSCTL_SCOPES:\n", "    if False:\n",
           (U_VALIDATE,), ()),
    mutant("validate-control-characters", "control characters pass decode_text",
           VALIDATE, "    if not text.isprintable():\n", "    if False:\n",
           (U_VALIDATE,), ()),
    mutant("validate-too-many-addresses", "an ip key of any length is parsed",
           VALIDATE, "if len(tokens) > MAX_ADDRESSES:", "if False:",
           (U_VALIDATE,), ()),
    # --- inputs --------------------------------------------------------------------------
    mutant("inputs-vifname-impersonates", "vifname may be another VM's interface name",
           INPUTS, "if ifname != env.vif.name and VIF_RE.fullmatch(ifname):", "if False:",
           (U_INPUTS,), ()),
    mutant("inputs-online-without-mac", "online with addresses but no MAC goes ahead",
           INPUTS, "    elif online and addresses.used:\n", "    elif False:\n",
           (U_INPUTS,), ()),
    mutant("inputs-online-without-gateway", "online of an IPv4 client without the netvm's gateway goes ahead",
           INPUTS, "if online and gateway is None and inp.addresses.ipv4 is not None:", "if False:",
           (U_INPUTS,), ()),
    mutant("inputs-ipv6-always-on", "clients' IPv6 routed although the netvm has no IPv6",
           INPUTS, "netvm_ipv6=not online or gateway6 is not None or qdb.read(QDB_OWN_IP6) is not None,",
           "netvm_ipv6=True,",
           (U_INPUTS, U_EDGE_KILLS), (N_ONLINE,)),
    mutant("inputs-hidden-wait-everywhere", "every client, not only the hidden range, waits for a mapping",
           INPUTS, "and wait > 0 and real in HIDDEN_RANGE:", "and wait > 0:",
           (U_MAPPED,), ()),
    # --- locks ---------------------------------------------------------------------------
    mutant("locks-one-slot", "every key maps to the same lock: unrelated vifs wait for each other",
           LOCKS, "return zlib.crc32(key.encode()) % SLOTS", "return 0",
           (U_LOCKS,), ()),
    mutant("locks-shared", "the per-key locks are shared, not exclusive",
           LOCKS, "fcntl.lockf(self._fd, fcntl.LOCK_EX, 1, offset)", "fcntl.lockf(self._fd, fcntl.LOCK_SH, 1, offset)",
           (U_LOCKS,), (N_RACE,)),
    mutant("locks-kept-after-timeout", "a timed-out acquire keeps the locks it already took",
           LOCKS, "        except _LockTimeoutError:\n            self.release()\n",
           "        except _LockTimeoutError:\n",
           (U_LOCKS, U_EDGE_KILLS), ()),
    # --- the mapped namespace's NAT table (ICMP hiding) -----------------------------------
    mutant("mapped-icmp-errors-forwarded", "ICMP errors revealing the real address reach the client",
           MAPPED,
           '[j.match(j.payload("icmp", "type"), j.anon_set(*ICMP_ERRORS_REVEALING[1:])), j.COUNTER, j.DROP],\n',
           "",
           (U_MAPPED,), (N_MAPPED_ICMP,)),
    mutant("mapped-frag-needed-dropped", "ICMP fragmentation-needed is dropped too (path MTU discovery breaks)",
           MAPPED, '         j.match(j.payload("icmp", "code"), "frag-needed", op="!="), j.COUNTER, j.DROP],',
           "         j.COUNTER, j.DROP],",
           (U_MAPPED,), (N_MAPPED_PMTU,)),
    mutant("mapped-hiding-ignored", "hide-netvm's drop of the netvm's addresses is never installed",
           MAPPED, "    if m.hide:\n", "    if False:\n",
           (U_MAPPED,), (N_MAPPED_ALL,)),
    mutant("mapped-arp-any-source", "the client's ARP is accepted whatever address it claims",
           MAPPED, '[j.match(j.payload("arp", "saddr ip"), V), j.match(j.payload("arp", "daddr ip"), VG), j.ACCEPT]',
           '[j.match(j.payload("arp", "daddr ip"), VG), j.ACCEPT]',
           (U_MAPPED,), (N_MAPPED_ALL,)),
    mutant("mapped-table-matches-anything", "any NAT table in the namespace is taken as the wanted one",
           MAPPED, "return want_chains == have_chains and want_rules == have_rules", "return True",
           (U_MAPPED,), (N_MAPPED,)),
    # --- cli's failure reporting -----------------------------------------------------------
    mutant("cli-failure-exits-0", "a failed event exits 0",
           CLI, "        _report_failure(environ, xs, str(exc), args)\n        return ExitCode.FAILURE\n",
           "        _report_failure(environ, xs, str(exc), args)\n        return ExitCode.OK\n",
           (U_CLI,), ()),
    mutant("cli-failure-not-reported", "a failure is not written to hotplug-status/hotplug-error",
           CLI, "        _report_failure(environ, xs, str(exc), args)\n", "",
           (U_CLI,), ()),
    mutant("cli-failure-needs-open-xenstore", "a failure before XenStore was opened is not reported",
           CLI, "        if xs is None or not xs.usable:\n", "        if False:\n",
           (U_CLI, U_EDGE_KILLS), ()),
    mutant("cli-dry-run-reports-failure", "a dry run writes its failure to XenStore",
           CLI, "    if args.dry_run:\n        return  # a dry run writes nothing, not even its failure\n",
           "    if False:\n        return  # a dry run writes nothing, not even its failure\n",
           (U_CLI, U_EDGE_KILLS), ()),
)


def all_mutants() -> tuple[Mutant, ...]:
    return (*MUTANTS, *BREADTH)


# --- the copy and its interpreter ---------------------------------------------


@dataclass
class Copy:
    root: Path  # the temporary directory holding the tree and its venv
    tree: Path = field(init=False)
    python: Path = field(init=False)
    bindir: Path = field(init=False)

    def __post_init__(self) -> None:
        self.tree = self.root / "tree"
        self.bindir = self.root / "venv" / "bin"
        self.python = self.bindir / "python"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(PYTHONPATH=str(self.tree), QUBES_NETSIM_BIN=str(self.bindir), PYTHONDONTWRITEBYTECODE="1")
        env.pop("QUBES_RELIABILITY", None)
        return env


def make_copy(parent: Path, name: str) -> Copy:
    """The working tree (committed or not) in ``parent/name/tree``, with a
    shadow venv in ``parent/name/venv`` that imports the copy."""
    copy = Copy(parent / name)
    shutil.copytree(ROOT, copy.tree, ignore=IGNORED, symlinks=True)
    home = copy.root / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False, symlinks=True).create(home)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(home), "platbase": str(home)}))
    # The real venv's packages (pytest, pyroute2...) as plain paths: its own
    # .pth files, among them the editable install of the working tree, are
    # not processed from a path listed in a .pth file.
    (site / "zz-mutation.pth").write_text(f"{copy.tree}\n{sysconfig.get_path('purelib')}\n")
    for script, module in ENTRY_POINTS.items():
        path = copy.bindir / script
        path.write_text(f"#!{copy.python}\nimport sys\nsys.path.insert(0, {str(copy.tree)!r})\n"
                        f"from {module} import run\nrun()\n")
        path.chmod(0o755)
    return copy


class StaleMutantError(Exception):
    pass


class HarnessError(Exception):
    pass


def apply_edits(copy: Copy, edits: tuple[Edit, ...]) -> None:
    for edit in edits:
        path = copy.tree / edit.file
        text = path.read_text()
        count = text.count(edit.old)
        if count != 1:
            raise StaleMutantError(f"{edit.file}: the snippet occurs {count} times, not once:\n{edit.old}")
        text = text.replace(edit.old, edit.new)
        if path.suffix == ".py":  # a mutant must be a program, not a syntax error
            try:
                compile(text, str(path), "exec")
            except SyntaxError as exc:
                raise StaleMutantError(
                    f"{edit.file}: the mutant is no program ({exc.msg}, line {exc.lineno})") from None
        path.write_text(text)


def check_snippets(mutants: list[Mutant]) -> int:
    """Exit 2 naming every stale mutant (a snippet not found exactly once), else 0."""
    stale = []
    for m in mutants:
        for edit in m.edits:
            count = (ROOT / edit.file).read_text().count(edit.old)
            if count != 1:
                stale.append(f"{m.id}: {edit.file}: the snippet occurs {count} times, not once")
    for line in stale:
        print(f"mutation: {line}", file=sys.stderr)
    print(f"{len(mutants) - len({s.split(':')[0] for s in stale})} of {len(mutants)} mutants apply")
    return 2 if stale else 0


# --- running the tiers ------------------------------------------------------------


@dataclass
class Outcome:
    passed: bool
    failed_test: str = ""
    output: str = ""


def run_pytest(copy: Copy, tests: tuple[str, ...], *, namespace: bool) -> Outcome:
    env = copy.env()
    if namespace:
        env["QUBES_REQUIRE_NETNS"] = "1"  # never a silent skip
    try:
        proc = subprocess.run([str(copy.python), *PYTEST, *tests], cwd=copy.tree, env=env, capture_output=True,
                              text=True, timeout=TIER_TIMEOUT)
    except subprocess.TimeoutExpired:
        return Outcome(False, f"(timed out after {TIER_TIMEOUT:.0f} s)")
    output = proc.stdout + proc.stderr
    if proc.returncode == 0:
        return Outcome(True, output=output)
    if proc.returncode != 1:  # 2-5: collection error, interrupted, usage error, nothing collected
        raise HarnessError(f"pytest {' '.join(tests)} exited {proc.returncode}:\n{output[-3000:]}")
    failed = [line.split(" ", 2)[1] for line in output.splitlines() if line.startswith(("FAILED ", "ERROR "))]
    return Outcome(False, failed[0] if failed else "?", output)


PROBE_TOKEN = "MUTATION-PROBE-4c1f"
PROBE_TEST = f'''
import os, subprocess, sys

from qubes_netsim.topology import bin_path

TREE = {{tree!r}}
CLEAN = {{{{"PATH": os.environ["PATH"]}}}}  # as the simulated netvm runs its entry points


def test_pytest_imports_the_copy():
    import vif_route_qubes.cli
    assert vif_route_qubes.cli.__file__.startswith(TREE + os.sep)
    assert "{PROBE_TOKEN}" in vif_route_qubes.cli.DESCRIPTION


def test_entry_points_import_the_copy():
    out = subprocess.run([bin_path("vif-route-qubes"), "--help"], env=CLEAN, capture_output=True, text=True, cwd="/")
    assert "{PROBE_TOKEN}" in out.stdout, out.stdout + out.stderr
    code = "import setup_dnat_to_ns.cli as c; print(c.__file__)"
    out = subprocess.run([sys.executable, "-c", code], env=CLEAN, capture_output=True, text=True, cwd="/")
    assert out.stdout.startswith(TREE + os.sep), out.stdout + out.stderr
    assert os.path.dirname(bin_path("qubes-setup-dnat-to-ns")) == os.path.dirname(bin_path("vif-route-qubes"))


def test_subprocesses_of_sys_executable_import_the_copy():
    code = "import vif_route_qubes.cli as c; print(c.__file__, c.DESCRIPTION)"
    out = subprocess.run([sys.executable, "-c", code], env=CLEAN, capture_output=True, text=True, cwd="/")
    assert out.stdout.startswith(TREE + os.sep) and "{PROBE_TOKEN}" in out.stdout, out.stdout + out.stderr
'''


def probe(parent: Path) -> None:
    """A copy whose cli says PROBE_TOKEN: every way in must see it."""
    copy = make_copy(parent, "probe")
    apply_edits(copy, (Edit("vif_route_qubes/cli.py", "Configure (online) or tear down",
                            f"{PROBE_TOKEN} Configure (online) or tear down"),))
    (copy.tree / "tests" / "test_mutation_probe.py").write_text(PROBE_TEST.format(tree=str(copy.tree)))
    outcome = run_pytest(copy, ("tests/test_mutation_probe.py",), namespace=False)
    if not outcome.passed:
        raise HarnessError(f"the copy's code is not what runs:\n{outcome.output[-3000:]}")
    shutil.rmtree(copy.root)


# --- the run ------------------------------------------------------------------------


@dataclass
class Result:
    mutant: Mutant
    killed_by: str  # "unit", "namespace" or "SURVIVED"
    test: str
    seconds: float


class Baseline:
    """The listed tests pass on an unmutated copy: otherwise a "kill" means nothing.

    Checked lazily, per tier and file, the first time a mutant needs it.
    """

    def __init__(self, parent: Path) -> None:
        self.copy = make_copy(parent, "baseline")
        self.passed: set[str] = set()

    def check(self, tests: tuple[str, ...], *, namespace: bool) -> float:
        """Seconds spent (not the mutant's)."""
        todo = tuple(t for t in tests if t not in self.passed)
        if not todo:
            return 0.0
        start = time.monotonic()
        outcome = run_pytest(self.copy, todo, namespace=namespace)
        if not outcome.passed:
            raise HarnessError(f"{outcome.failed_test} fails on the unmutated tree:\n{outcome.output[-3000:]}")
        self.passed.update(todo)
        return time.monotonic() - start


def run_mutant(m: Mutant, parent: Path, baseline: Baseline, keep: bool, unit: bool = True,
               namespace: bool = True) -> Result:
    start = time.monotonic()
    copy = make_copy(parent, m.id)
    try:
        apply_edits(copy, m.edits)
        if unit and m.unit:  # (no unit tests named: pytest alone would run everything)
            start += baseline.check(m.unit, namespace=False)
            outcome = run_pytest(copy, m.unit, namespace=False)
            if not outcome.passed:
                return Result(m, "unit", outcome.failed_test, time.monotonic() - start)
        if m.namespace and namespace:
            if os.geteuid() != 0:
                raise HarnessError(f"{m.id} survived the unit tier; its namespace tier needs root")
            start += baseline.check(m.namespace, namespace=True)
            outcome = run_pytest(copy, m.namespace, namespace=True)
            if not outcome.passed:
                return Result(m, "namespace", outcome.failed_test, time.monotonic() - start)
        return Result(m, "SURVIVED", "", time.monotonic() - start)
    finally:
        if not keep:
            shutil.rmtree(copy.root, ignore_errors=True)


def table(results: list[Result]) -> str:
    rows = [("mutant", "description", "killed by", "seconds", "first failing test")]
    rows += [(r.mutant.id, r.mutant.description, r.killed_by, f"{r.seconds:.1f}", r.test) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[i].ljust(widths[i]) if i != 3 else row[i].rjust(widths[i]) for i in range(4)]
        lines.append(" | ".join([*cells, row[4]]).rstrip())
        if n == 0:
            lines.append("-+-".join("-" * w for w in [*widths, len(row[4])]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", metavar="ID", help="run only this mutant (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--check", action="store_true",
                        help="only check that every mutant's snippets occur exactly once (after a merge); no tests")
    parser.add_argument("--keep", action="store_true", help="keep the mutated copies (their paths are printed)")
    parser.add_argument("--namespace-only", action="store_true",
                        help="skip the unit tier: how strong is the namespace tier alone? (slow; not the check)")
    parser.add_argument("--unit-only", action="store_true",
                        help="skip the namespace tier: which mutants does the unit tier alone kill? (not the check)")
    args = parser.parse_args(argv)

    everything = all_mutants()
    ids = [m.id for m in everything]
    if len(set(ids)) != len(ids):
        parser.error("duplicate mutant ids")
    if args.list:
        for m in everything:
            print(f"{m.id}: {m.description}")
        return 0
    chosen = [m for m in everything if not args.only or m.id in args.only]
    if args.only and len(chosen) != len(set(args.only)):
        parser.error(f"unknown mutant id(s): {sorted(set(args.only) - set(ids))}")
    if args.check:
        return check_snippets(chosen)
    if sys.prefix == sys.base_prefix:
        parser.error("run it with the project's venv (make mutation): pytest and pyroute2 come from there")

    started = time.monotonic()
    parent = Path(tempfile.mkdtemp(prefix="qubes-mutation-"))
    results: list[Result] = []
    try:
        probe(parent)
        baseline = Baseline(parent)
        for m in chosen:
            result = run_mutant(m, parent, baseline, args.keep, unit=not args.namespace_only,
                                namespace=not args.unit_only)
            results.append(result)
            print(f"  {m.id}: {result.killed_by} ({result.seconds:.1f} s) {result.test}", flush=True)
    except (StaleMutantError, HarnessError) as exc:
        print(f"mutation: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.keep:
            print(f"copies kept in {parent}", file=sys.stderr)
        else:
            shutil.rmtree(parent, ignore_errors=True)

    print(table(results))
    survived = [r.mutant.id for r in results if r.killed_by == "SURVIVED"]
    if args.namespace_only:
        print(f"\nnamespace tier alone: {len(results) - len(survived)} of {len(results)} killed; "
              f"{time.monotonic() - started:.0f} s in all")
        return 1 if survived else 0
    unit = sum(r.killed_by == "unit" for r in results)
    print(f"\n{len(results)} mutants: {unit} killed by the unit tier, {len(results) - unit - len(survived)} by the "
          f"namespace tier, {len(survived)} survived; {time.monotonic() - started:.0f} s in all")
    if survived:
        print(f"SURVIVED: {', '.join(survived)}: a test is missing (or the mutant is wrong)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
