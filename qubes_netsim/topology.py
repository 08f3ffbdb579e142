"""A simulated Qubes network VM built from network namespaces.

    upstream ns                netvm ns                         client ns (one per VM)
    eth0 198.51.100.1  <--->   eth0 198.51.100.2 (group 1)
    dnsmasq (DNS)              vif<domid>.0 (veth)   <--->     eth0 10.137.0.<n>
                               XenStore + QubesDB doubles       default via 10.137.0.1

The doubles are populated as a real netvm's would be: QubesDB holds the
gateway and DNS addresses, XenStore holds each backend's ``ip``, ``mac``,
``type``... under ``/local/domain/<netvm domid>/backend/vif/<domid>/0``.
The entry points run inside the netvm namespace as real processes, exactly
as libxl would start them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any, ClassVar

from .netns import Netns, NftError, run, unique_prefix, wait_for
from .qubesdbd import QubesDBDouble
from .xenstored import XenStoreDouble

NETVM_DOMID = 1
GATEWAY = "10.137.0.1"
GATEWAY6 = "fd09:24ef:4179::a89:1"
VIRTUAL_DNS = ("10.139.1.1", "10.139.1.2")
UPSTREAM = "198.51.100.1"
NETVM_UPLINK = "198.51.100.2"
UPSTREAM6 = "2001:db8:100::1"
NETVM_UPLINK6 = "2001:db8:100::2"
UPSTREAM_NAME = "upstream.test"
VIF_MAC = "fe:ff:ff:ff:ff:ff"  # what Xen's netback gives every vif


SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bin_path(name: str) -> str:
    """An installed entry point next to the running interpreter (the venv's)."""
    override = os.environ.get("QUBES_NETSIM_BIN")
    directory = override or os.path.dirname(sys.executable)
    path = os.path.join(directory, name)
    return path if os.path.exists(path) else shutil.which(name) or path


@dataclass
class Client:
    domid: int
    ns: Netns
    ipv4: IPv4Address | None
    ipv6: IPv6Address | None
    mac: str
    visible: IPv4Address | None = None  # a mapped client's own idea of its address

    @property
    def vif(self) -> str:
        return f"vif{self.domid}.0"

    @property
    def xenbus_path(self) -> str:
        """Relative, as libxl passes it: resolved against the netvm's home."""
        return f"backend/vif/{self.domid}/0"

    def ping(self, target: str, *, source: str | None = None, count: int = 1, wait: float = 2.0) -> bool:
        argv = ["ping", "-n", "-q", "-c", str(count), "-W", f"{wait:g}"]
        if source:
            argv += ["-I", source]
        return self.ns.run(argv + [target], check=False, timeout=wait * count + 5).returncode == 0


class SimNetvm:
    """Build with ``create()``, tear down with ``destroy()`` (also on failure).

    ``load_layout`` loads the netvm's base ruleset from the hand-written
    files in rulesets/ (never built by the code under test); ``base_ruleset``
    picks which: "ipv6" (antispoof + IPv4 + IPv6 filter chains, the default)
    or "ipv6-disabled" (what Qubes loads with IPv6 off: no ``ip6 qubes``
    filter chains at all). ``ipv6`` gives the uplink and QubesDB IPv6.
    """

    BASE_RULESETS: ClassVar[Mapping[str, str]] = {"ipv6": "on", "ipv6-disabled": "off"}  # -> load-layout --ipv6

    def __init__(self, prefix: str | None = None, *, load_layout: bool = True, ipv6: bool = True,
                 base_ruleset: str = "ipv6") -> None:
        if base_ruleset not in self.BASE_RULESETS:
            raise ValueError(f"base_ruleset {base_ruleset!r}: one of {', '.join(self.BASE_RULESETS)}")
        self.prefix = prefix or unique_prefix()
        self.workdir = tempfile.mkdtemp(prefix=f"{self.prefix}-")
        self.netvm = Netns(f"{self.prefix}-netvm")
        self.upstream = Netns(f"{self.prefix}-up")
        self.clients: dict[int, Client] = {}
        self.load_layout = load_layout
        self.ipv6 = ipv6
        self.base_ruleset = base_ruleset
        self.xenstore = XenStoreDouble(os.path.join(self.workdir, "xenstored.sock"), domid=NETVM_DOMID)
        self.qubesdb = QubesDBDouble(os.path.join(self.workdir, "qubesdb.sock"))
        self.hooks_dir = os.path.join(self.workdir, "network-hooks.d")
        self.service_dir = os.path.join(self.workdir, "qubes-service")
        self.resolv_conf = os.path.join(self.workdir, "resolv.conf")
        # Never the host's system bus: tests that want one start their own.
        self.bus_address = f"unix:path={os.path.join(self.workdir, 'no-system-bus')}"
        self._dnsmasq: list[subprocess.Popen[str]] = []
        self._bulk_peers: Netns | None = None

    # --- building ---

    def create(self) -> SimNetvm:
        try:
            self._create()
        except BaseException:
            self.destroy()
            raise
        return self

    def _create(self) -> None:
        os.makedirs(self.hooks_dir)
        os.makedirs(self.service_dir)
        self.write_resolv_conf(f"nameserver {UPSTREAM}\n")
        self.xenstore.start()
        self.qubesdb.start()
        self.upstream.create()
        self.netvm.create()
        run(["ip", "link", "add", "eth0", "netns", self.upstream.name, "type", "veth",
             "peer", "name", "eth0", "netns", self.netvm.name])
        self.upstream.sh(
            f"ip addr add {UPSTREAM}/24 dev eth0 && ip link set eth0 up"
            + (f" && ip addr add {UPSTREAM6}/64 dev eth0 nodad" if self.ipv6 else "")
        )
        self.netvm.sh(
            f"ip addr add {NETVM_UPLINK}/24 dev eth0 && ip link set eth0 group 1 up"
            f" && ip route add default via {UPSTREAM}"
            " && echo 1 > /proc/sys/net/ipv4/ip_forward"
            + (
                f" && ip addr add {NETVM_UPLINK6}/64 dev eth0 nodad && ip -6 route add default via {UPSTREAM6}"
                " && echo 1 > /proc/sys/net/ipv6/conf/all/forwarding"
                if self.ipv6
                else ""
            )
        )
        if self.load_layout:
            self.load_base_ruleset()
        q = self.qubesdb
        q.write("/qubes-netvm-gateway", GATEWAY)
        q.write("/qubes-netvm-primary-dns", VIRTUAL_DNS[0])
        q.write("/qubes-netvm-secondary-dns", VIRTUAL_DNS[1])
        q.write("/qubes-ip", NETVM_UPLINK)
        if self.ipv6:
            q.write("/qubes-netvm-gateway6", GATEWAY6)

    def load_base_ruleset(self) -> None:
        """What qubes-antispoof.service and qubes-iptables.service do: nft -f of the base files."""
        self.netvm.run([sys.executable, "-m", "qubes_netsim", "load-layout",
                        "--ipv6", self.BASE_RULESETS[self.base_ruleset]])

    def start_dns(self, records: dict[str, str] | None = None, address: str = UPSTREAM) -> None:
        """A dnsmasq on the upstream host answering only its own records.

        More than one can run, each on its own address, so that a test can
        tell which server answered.
        """
        if address not in (UPSTREAM, UPSTREAM6):
            if ":" in address:
                self.upstream.sh(f"ip addr add {address}/128 dev eth0 nodad")
            else:
                self.upstream.sh(f"ip addr add {address}/32 dev eth0")
        records = records or {UPSTREAM_NAME: UPSTREAM}
        argv = [
            "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
            "--bind-interfaces", f"--listen-address={address}", "--except-interface=lo",
            f"--pid-file={os.path.join(self.workdir, f'dnsmasq-{address}.pid')}", "--user=root",
        ]
        argv += [f"--host-record={name},{addr}" for name, addr in records.items()]
        proc = self.upstream.popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._dnsmasq.append(proc)
        # Ready when it answers (dnsmasq binds before it forks nothing: poll).
        name = next(iter(records))
        wait_for(lambda: self.upstream.run(["dig", "+short", "+time=1", "+tries=1", f"@{address}", name],
                                           check=False).stdout.strip(), timeout=10, what=f"dnsmasq on {address}")

    def add_client(self, domid: int, ipv4: str | None, ipv6: str | None = None, *, mac: str | None = None,
                   write_xenstore: bool = True) -> Client:
        ns = Netns(f"{self.prefix}-c{domid}").create()
        mac = mac or f"00:16:3e:5e:6c:{domid & 0xFF:02x}"
        client = Client(domid, ns, IPv4Address(ipv4) if ipv4 else None, IPv6Address(ipv6) if ipv6 else None, mac)
        self.clients[domid] = client
        # The netvm end is born down, as a fresh Xen vif is.
        run(["ip", "link", "add", client.vif, "netns", self.netvm.name, "address", VIF_MAC, "type", "veth",
             "peer", "name", "eth0", "netns", ns.name, "address", mac])
        setup = ["ip link set eth0 up"]
        if ipv4:
            setup += [f"ip addr add {ipv4}/32 dev eth0", f"ip route add {GATEWAY} dev eth0",
                      f"ip route add default via {GATEWAY} dev eth0"]
        if ipv6:
            setup += [f"ip addr add {ipv6}/128 dev eth0 nodad", f"ip -6 route add {GATEWAY6} dev eth0",
                      f"ip -6 route add default via {GATEWAY6} dev eth0"]
        ns.sh(" && ".join(setup))
        if write_xenstore:
            self.write_backend(client)
        return client

    def add_mapped_client(self, domid: int, real: str, visible: str, visible_gateway: str,
                          *, write_mapping: bool = True) -> Client:
        """A client that only knows its visible address and gateway.

        XenStore holds the real address; QubesDB's /mapped-ip entries tell
        the netvm what the client believes (unless ``write_mapping`` is off,
        to play the race where dom0 writes them late).
        """
        client = self.add_client(domid, None, write_xenstore=False)
        client.ns.sh(f"ip addr add {visible}/32 dev eth0 && ip route add {visible_gateway} dev eth0"
                     f" && ip route add default via {visible_gateway} dev eth0")
        client.ipv4 = IPv4Address(real)
        client.visible = IPv4Address(visible)
        self.write_backend(client)
        if write_mapping:
            self.write_mapping(real, visible, visible_gateway)
        return client

    def write_mapping(self, real: str, visible: str, visible_gateway: str) -> None:
        self.qubesdb.write(f"/mapped-ip/{real}/visible-gateway", visible_gateway)
        self.qubesdb.write(f"/mapped-ip/{real}/visible-ip", visible)

    def add_bulk_vifs(self, domids: list[int], prefix: str = "10.137") -> dict[int, tuple[str, str, str]]:
        """Many vifs at once, for load: veth pairs named vifN.0 in the netvm
        (down, as fresh Xen vifs), their far ends together in one namespace
        rather than one each. XenStore is filled as libxl does.

        Returns {domid: (ipv4, ipv6, mac)}.
        """
        if self._bulk_peers is None:
            self._bulk_peers = Netns(f"{self.prefix}-bulk").create()
        made = {}
        for domid in domids:
            hi, lo = divmod(domid, 250)
            mac = f"00:16:3e:5f:{hi % 256:02x}:{lo:02x}"
            v4, v6 = f"{prefix}.{hi}.{lo + 2}", f"fd09:24ef:4179::{domid:x}"
            run(["ip", "link", "add", f"vif{domid}.0", "netns", self.netvm.name, "address", VIF_MAC, "type", "veth",
                 "peer", "name", f"p{domid}", "netns", self._bulk_peers.name, "address", mac])
            base = f"{self.xenstore.home()}/backend/vif/{domid}/0"
            for key, value in (("ip", f"{v4} {v6}"), ("mac", mac), ("type", "vif")):
                self.xenstore.write(f"{base}/{key}", value)
            made[domid] = (v4, v6, mac)
        return made

    def write_backend(self, client: Client, **overrides: str) -> None:
        base = f"{self.xenstore.home()}/{client.xenbus_path}"
        addrs = " ".join(str(a) for a in (client.ipv4, client.ipv6) if a is not None)
        keys = {"frontend-id": str(client.domid), "handle": "0", "online": "1", "mac": client.mac,
                "ip": addrs, "type": "vif", "script": "/etc/xen/scripts/vif-route-qubes", **overrides}
        for key, value in keys.items():
            self.xenstore.write(f"{base}/{key}", value)

    # --- running the entry points as libxl would ---

    def env(self, client: Client | None = None, **extra: str) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            # The code under test, not a copy installed system-wide: the venv
            # sees the distribution's site-packages (for python3-nftables),
            # which come before an editable install on sys.path.
            "PYTHONPATH": SOURCE_ROOT,
            "XENSTORED_PATH": self.xenstore.path,
            "QUBESDB_SOCKET": self.qubesdb.path,
            "DBUS_SYSTEM_BUS_ADDRESS": self.bus_address,
        }
        if client is not None:
            env.update(vif=client.vif, XENBUS_PATH=client.xenbus_path)
        env.update(extra)
        return env

    def vif_route(self, command: str, client: Client, *args: str, timeout: float = 60,
                  env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        argv = self.vif_route_argv(*args, command)
        return self.netvm.run(argv, check=False, timeout=timeout, env=env or self.env(client))

    def vif_route_argv(self, *args: str) -> list[str]:
        return [bin_path("vif-route-qubes"), "--hooks-dir", self.hooks_dir, *args]

    def dnat_argv(self, *args: str) -> list[str]:
        return [bin_path("qubes-setup-dnat-to-ns"), "--resolv-conf", self.resolv_conf,
                "--qubes-service-dir", self.service_dir, *args]

    def dnat(self, *args: str, timeout: float = 60,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """qubes-setup-dnat-to-ns in the netvm, with this simulation's files."""
        return self.netvm.run(self.dnat_argv(*args), check=False, timeout=timeout, env=env or self.env())

    def write_resolv_conf(self, text: str) -> None:
        """Replace resolv.conf as resolvers do: a new file renamed over the old."""
        tmp = self.resolv_conf + ".new"
        with open(tmp, "w") as handle:
            handle.write(text)
        os.replace(tmp, self.resolv_conf)

    def restart_qubesdb(self) -> None:
        """A new QubesDB daemon on the same socket, with the same entries
        (after a test stopped it to play a daemon that is gone)."""
        entries = dict(self.qubesdb.entries)
        self.qubesdb.stop()
        self.qubesdb = QubesDBDouble(self.qubesdb.path)
        self.qubesdb.entries.update(entries)
        self.qubesdb.start()

    def hotplug_status(self, client: Client) -> str | None:
        value = self.xenstore.read(f"{client.xenbus_path}/hotplug-status")
        return value.decode() if value is not None else None

    def hotplug_error(self, client: Client) -> str | None:
        value = self.xenstore.read(f"{client.xenbus_path}/hotplug-error")
        return value.decode() if value is not None else None

    # --- oracle views of the netvm (iproute2 and nft, not our code) ---

    def set_elements(self, family: str, name: str) -> set[Any]:
        items = self.netvm.nft_json("list", "set", family, "qubes", name)
        elems: set[Any] = set()
        for item in items:
            for elem in item.get("set", {}).get("elem", []):
                if isinstance(elem, dict) and "concat" in elem:
                    elems.add((elem["concat"][0], str(ip_address(elem["concat"][1]))))
                else:
                    elems.add(str(ip_address(elem)))
        return elems

    def routes(self, family: str = "-4") -> list[dict[str, Any]]:
        return self.netvm.ip_json(family, "route", "show", "table", "main")

    def neighbours(self, dev: str) -> list[dict[str, Any]]:
        return self.netvm.ip_json("neigh", "show", "dev", dev, "nud", "permanent")

    def counter(self, family: str, chain: str) -> int:
        """Packets counted by the counter rules of a qubes chain."""
        return self.netvm.counter_packets(family, "qubes", chain)

    def forwarded_counter(self, saddr: str) -> Callable[[], int]:
        """Count packets from ``saddr`` that the netvm forwards (a counting
        rule added to its custom-forward chain)."""
        family = "ip6" if ":" in saddr else "ip"
        self.netvm.run(["nft", "add", "rule", family, "qubes", "custom-forward", family, "saddr", saddr, "counter"])

        def from_saddr(rule: dict[str, Any]) -> bool:
            return any(e.get("match", {}).get("right") == saddr for e in rule.get("expr", []))

        return lambda: self.netvm.counter_packets(family, "qubes", "custom-forward", from_saddr)

    def dnat_chain(self, handles: bool = False) -> str:
        """The kernel's dnat-dns chain as ``nft list`` prints it ("" if absent:
        nft's ENOENT). Any other failure of nft raises, never reads as absent."""
        argv = ["nft", *(["-a"] if handles else []), "list", "chain", "ip", "qubes", "dnat-dns"]
        result = self.netvm.run(argv, check=False)
        if result.returncode != 0:
            if "No such file or directory" in result.stderr:
                return ""
            raise NftError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout

    # --- teardown ---

    def destroy(self) -> None:
        for proc in self._dnsmasq:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
        for client in list(self.clients.values()):
            client.ns.delete()
            Netns(f"{client.vif}-nat").delete()  # a mapped vif's namespace
        for ns in (self.netvm, self.upstream, self._bulk_peers):
            if ns is not None:
                ns.delete()
        self.xenstore.stop()
        self.qubesdb.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
