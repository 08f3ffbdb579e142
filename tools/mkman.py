"""Write the manual pages of the entry points from their argument parsers.

    python3 tools/mkman.py OUTDIR        # writes OUTDIR/<program>.8

The parser of each entry point is the one source of truth for the synopsis,
the description, the options and the exit statuses (taken from the
"exit status:" block of its epilog, the text --help prints). What a parser
does not know (environment, files, examples, see also) is kept here, per
program. tests/unit/test_manpages.py checks that every option of --help is
in the page.

The parser is obtained by calling the module's own ``parse_args`` with
``--help`` while ``ArgumentParser.parse_args`` (and ``parse_intermixed_args``) is intercepted: the entry
points need no change for this, and a new option appears in the page the
next time it is built.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

SECTION = "8"
SOURCE = "qubes-netvm-hotplug"
MANUAL = "Qubes network VM"


class Extra(NamedTuple):
    """What the parser does not say: each entry a (term, text) pair."""

    module: str
    summary: str
    environment: tuple[tuple[str, str], ...]
    files: tuple[tuple[str, str], ...]
    examples: tuple[tuple[str, str], ...]
    see_also: tuple[str, ...]


PAGES: dict[str, Extra] = {
    "vif-route-qubes": Extra(
        module="vif_route_qubes.cli",
        summary="set up or tear down a client VM's network interface in a Qubes network VM",
        environment=(
            ("vif", "the interface, vif<domid>.<devid> (required for online and offline)"),
            ("XENBUS_PATH", "the backend's XenStore directory, e.g. backend/vif/12/0 (required)"),
            ("UDEV_CALL", ("1 when run by the udev rule: nothing is done when XenStore says libxl "
                          "runs the hotplug scripts itself (libxl/disable_udev)")),
            ("XENSTORED_PATH", ("the XenStore daemon's socket (default /var/run/xenstored/socket, "
                               "else /dev/xen/xenbus)")),
            ("QUBESDB_SOCKET", "the QubesDB daemon's socket (default /var/run/qubes/qubesdb.sock)"),
        ),
        files=(
            ("/etc/xen/scripts/vif-route-qubes", "this program, where libxl looks for it"),
            ("/usr/lib/udev/rules.d/90-qubes-vif-route.rules", ("runs it for driver domains where libxl "
                                                               "does not (run_hotplug_scripts=0)")),
            ("/rw/config/network-hooks.d", "the administrator's hooks, run after online and offline"),
            ("/var/log/xen/xen-hotplug.log", "where messages go besides syslog (facility daemon)"),
            ("/usr/lib/qubes-netvm-hotplug/originals/vif-route-qubes",
             "the script of qubes-core-agent-networking, moved aside while this package is installed"),
            ("/usr/lib/systemd/system/qubes-vif-reconcile.service", ("runs reconcile; the drop-ins of "
                                                                    "qubes-antispoof, qubes-iptables and nftables "
                                                                    "start it after each (re)load of the ruleset")),
            ("/usr/lib/systemd/system/qubes-vif-watch.service", "runs watch"),
            ("/run/xen-hotplug/qubes-vif-route.lock", "the byte-range locks per interface and per client address"),
        ),
        examples=(
            ("vif=vif12.0 XENBUS_PATH=backend/vif/12/0 vif-route-qubes --dry-run online",
             "print what online would do for the VM of domid 12; change nothing"),
            ("vif=vif12.0 XENBUS_PATH=backend/vif/12/0 vif-route-qubes -v offline",
             "tear it down by hand, logging every step"),
            ("vif-route-qubes status", "when clients have no network: what the kernel holds against what "
             "XenStore says, per vif, and where the virtual DNS addresses point"),
            ("vif-route-qubes status --json vif12.0", "the same for one vif, for scripts"),
            ("vif-route-qubes --dry-run reconcile", "what reconcile would converge and remove, changing nothing"),
        ),
        see_also=("qubes-setup-dnat-to-ns(8)", "xl(1)", "nft(8)", "udev(7)"),
    ),
    "qubes-setup-dnat-to-ns": Extra(
        module="setup_dnat_to_ns.cli",
        summary="send DNS for the Qubes virtual DNS addresses to the uplink's servers",
        environment=(
            ("QUBESDB_SOCKET", "the QubesDB daemon's socket (default /var/run/qubes/qubesdb.sock)"),
            ("DBUS_SYSTEM_BUS_ADDRESS", "the system bus, where systemd-resolved is asked for its servers"),
        ),
        files=(
            ("/usr/lib/qubes/qubes-setup-dnat-to-ns", "this program"),
            ("/etc/resolv.conf", "nameserver lines, used when systemd-resolved has no servers"),
            ("/etc/NetworkManager/dispatcher.d/qubes-nmhook", "runs it when the uplink or its DNS changes"),
            ("/usr/lib/systemd/system/qubes-setup-dnat-to-ns-watch.service", "runs it with --watch"),
            ("/run/qubes-service/qubes-firewall", "when present, qubes-firewall is reloaded after a change"),
            ("/usr/lib/qubes-netvm-hotplug/originals/qubes-setup-dnat-to-ns",
             "the program of qubes-core-agent-networking, moved aside while this package is installed"),
        ),
        examples=(
            ("qubes-setup-dnat-to-ns --status", "which server each virtual DNS address goes to, and why"),
            ("qubes-setup-dnat-to-ns --dry-run", "print the chain that would be installed"),
            ("systemctl enable --now qubes-setup-dnat-to-ns-watch.service",
             "follow DNS changes of uplinks NetworkManager does not manage"),
        ),
        see_also=("vif-route-qubes(8)", "nft(8)", "resolv.conf(5)", "systemd-resolved(8)",
                  "NetworkManager-dispatcher(8)"),
    ),
}


class _CapturedError(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__(parser.prog)
        self.parser = parser


@contextmanager
def _intercept() -> Iterator[None]:
    original = argparse.ArgumentParser.parse_args
    original_intermixed = argparse.ArgumentParser.parse_intermixed_args

    def capture(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> argparse.Namespace:
        raise _CapturedError(self)

    argparse.ArgumentParser.parse_args = capture  # type: ignore[assignment, method-assign]
    argparse.ArgumentParser.parse_intermixed_args = capture  # type: ignore[assignment, method-assign]
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_args = original  # type: ignore[method-assign]
        argparse.ArgumentParser.parse_intermixed_args = original_intermixed  # type: ignore[method-assign]


def parser_of(module_name: str) -> argparse.ArgumentParser:
    """The argument parser ``module.parse_args`` builds."""
    module = importlib.import_module(module_name)
    with _intercept():
        try:
            module.parse_args(["--help"])
        except _CapturedError as captured:
            return captured.parser
    raise RuntimeError(f"{module_name}.parse_args built no ArgumentParser")


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    return {opt for action in parser._actions for opt in action.option_strings}


def _esc(text: str) -> str:
    """Plain text for roff: backslashes and hyphens escaped, no line starts with a control character."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return re.sub(r"^([.'])", r"\\&\1", text, flags=re.MULTILINE)


def _paragraphs(text: str) -> list[str]:
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]


def _exit_statuses(epilog: str) -> list[tuple[str, str]]:
    """The "exit status:" block of an epilog: lines "  N  text" and their continuations."""
    statuses: list[tuple[str, str]] = []
    inside = False
    for line in epilog.splitlines():
        if line.strip().lower() == "exit status:":
            inside = True
            continue
        if not inside:
            continue
        match = re.match(r"^\s+(\d+)\s+(.*)$", line)
        if match:
            statuses.append((match.group(1), match.group(2).strip()))
        elif line.strip() and statuses:
            statuses[-1] = (statuses[-1][0], statuses[-1][1] + " " + line.strip())
        elif not line.strip():
            inside = False
    return statuses


def _option_term(action: argparse.Action) -> str:
    """``\\fB\\-n\\fR, \\fB\\-\\-dry\\-run\\fR`` followed by the metavar, if any."""
    names = ", ".join(f"\\fB{_esc(opt)}\\fR" for opt in action.option_strings)
    if action.nargs == 0:
        return names
    metavar = action.metavar or action.dest.upper()
    return f"{names} \\fI{_esc(str(metavar))}\\fR"


def _synopsis(parser: argparse.ArgumentParser) -> str:
    usage = " ".join(parser.format_usage().split())
    usage = usage.removeprefix("usage: ").removeprefix(parser.prog).strip()
    return f".B {_esc(parser.prog)}\n{_esc(usage)}"


def render(program: str, parser: argparse.ArgumentParser, extra: Extra) -> str:
    out = [
        f'.\\" Generated by tools/mkman.py from the argument parser of {extra.module}; do not edit.',
        f'.TH {program.upper()} {SECTION} "" "{SOURCE}" "{MANUAL}"',
        ".SH NAME",
        f"{_esc(program)} \\- {_esc(extra.summary)}",
        ".SH SYNOPSIS",
        _synopsis(parser),
        ".SH DESCRIPTION",
    ]
    for paragraph in _paragraphs(parser.description or ""):
        out += [_esc(paragraph), ".PP"]
    if out[-1] == ".PP":
        out.pop()
    positionals = [a for a in parser._actions if not a.option_strings]
    if positionals:
        out.append(".SH ARGUMENTS")
        for action in positionals:
            out += [".TP", f"\\fI{_esc(str(action.metavar or action.dest))}\\fR", _esc(action.help or "")]
    out.append(".SH OPTIONS")
    for action in parser._actions:
        if action.option_strings:
            out += [".TP", _option_term(action), _esc(action.help or "")]
    out.append(".SH ENVIRONMENT")
    for name, text in extra.environment:
        out += [".TP", f"\\fB{_esc(name)}\\fR", _esc(text)]
    out.append(".SH EXIT STATUS")
    statuses = _exit_statuses(parser.epilog or "")
    if not statuses:
        raise ValueError(f"{program}: no 'exit status:' block in the parser's epilog")
    for code, text in statuses:
        out += [".TP", f"\\fB{code}\\fR", _esc(text)]
    out.append(".SH FILES")
    for path, text in extra.files:
        out += [".TP", f"\\fI{_esc(path)}\\fR", _esc(text)]
    out.append(".SH EXAMPLES")
    for command, text in extra.examples:
        out += [".PP", _esc(text) + ":", ".PP", ".RS", ".nf", _esc(command), ".fi", ".RE"]
    refs = [ref.split("(", 1) for ref in extra.see_also]
    out += [".SH SEE ALSO", ",\n".join(f"\\fB{_esc(name)}\\fR({section}" for name, section in refs)]
    return "\n".join(out) + "\n"


def page(program: str) -> str:
    extra = PAGES[program]
    return render(program, parser_of(extra.module), extra)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: mkman.py OUTDIR", file=sys.stderr)
        return 2
    os.makedirs(argv[0], exist_ok=True)
    for program in PAGES:
        with open(os.path.join(argv[0], f"{program}.{SECTION}"), "w", encoding="utf-8") as handle:
            handle.write(page(program))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
