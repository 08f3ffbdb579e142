"""Names and numbers of the environment we plug into, defined once.

See ../shared/docs/contract.md (the drop-in contract) for where each comes from.
"""

from __future__ import annotations

# typing costs milliseconds to import and these names only serve type
# checkers (annotations are not evaluated: PEP 563).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

# --- nftables layout (contract: "The nftables layout the suite maintains") ---
QUBES_TABLE: Final = "qubes"
FAMILIES: Final = ("ip", "ip6")
SET_DOWNSTREAM: Final = "downstream"
SET_ALLOWED: Final = "allowed"
CHAIN_PREROUTING: Final = "prerouting"
CHAIN_ANTISPOOF: Final = "antispoof"
CHAIN_INPUT: Final = "input"
CHAIN_FORWARD: Final = "forward"
CHAIN_POSTROUTING: Final = "postrouting"
CHAIN_CUSTOM_INPUT: Final = "custom-input"
CHAIN_CUSTOM_FORWARD: Final = "custom-forward"
CHAIN_ICMPV6: Final = "_icmpv6"
CHAIN_DNAT_DNS: Final = "dnat-dns"
# setup-dnat-to-ns's filter chain refusing DNS to virtual addresses without a server
CHAIN_DNS_REFUSE: Final = "dnat-dns-refuse"

# nftables set element types, per family
ADDR_TYPE: Final = {"ip": "ipv4_addr", "ip6": "ipv6_addr"}
PRIO_RAW: Final = -300  # the prerouting anti-spoofing chain runs before conntrack

# Optional acceleration: an inet table holding a flowtable over vifs and uplinks.
FLOW_FAMILY: Final = "inet"
FLOW_TABLE: Final = "qubes-flowtable"
FLOWTABLE: Final = "ft"
FLOW_CHAIN: Final = "forward"
FLOW_PRIO: Final = 10  # after the filter chains: only flows every chain accepted

# A mapped vif's private namespace: its netdev table and the netvm end's MAC.
NAT_TABLE: Final = "qubes-nat"
VIF_MAC: Final = "fe:ff:ff:ff:ff:ff"  # the netvm side of every vif, as Xen's netback has it

# --- interface groups (the uplink is group 1: not ours to set) ---
VIF_GROUP: Final = 2

# --- Xen / libxl ---
MAX_DOMID: Final = 32752  # highest domid libxl hands out; metric = MAX_DOMID - domid
IFNAMSIZ: Final = 16  # kernel limit including the terminating NUL
XENSTORED_SOCKETS: Final = ("/var/run/xenstored/socket",)
XENBUS_DEVICE: Final = "/dev/xen/xenbus"
XENSTORE_MAX_PAYLOAD: Final = 4096
HOTPLUG_LOG: Final = "/var/log/xen/xen-hotplug.log"
LOCK_FILE: Final = "/run/xen-hotplug/qubes-vif-route.lock"
LOCK_TIMEOUT: Final = 30.0  # seconds an event waits for another holding its vif or addresses

# --- QubesDB ---
QUBESDB_SOCKET: Final = "/var/run/qubes/qubesdb.sock"
QUBESDB_MAX_PATH: Final = 64  # including the NUL
QUBESDB_MAX_DATA: Final = 3072
QDB_GATEWAY: Final = "/qubes-netvm-gateway"
QDB_GATEWAY6: Final = "/qubes-netvm-gateway6"
QDB_PRIMARY_DNS: Final = "/qubes-netvm-primary-dns"
QDB_SECONDARY_DNS: Final = "/qubes-netvm-secondary-dns"
QDB_PRIMARY_DNS6: Final = "/qubes-netvm-primary-dns6"
QDB_SECONDARY_DNS6: Final = "/qubes-netvm-secondary-dns6"
QDB_OWN_IP: Final = "/qubes-ip"
QDB_OWN_IP6: Final = "/qubes-ip6"
QDB_SERVICE_PREFIX: Final = "/qubes-service/"
QDB_MAPPED_PREFIX: Final = "/mapped-ip/"
# Disposable VMs with hidden addresses get their real address here: for
# them a missing /mapped-ip entry is worth waiting for (dom0 may be late).
HIDDEN_NETWORK: Final = "10.138.0.0/16"

# --- service flags ---
SERVICE_HARDEN: Final = "harden-network-interfaces"
SERVICE_FLOWTABLE: Final = "network-flowtable"
# Mapped clients may not reach the netvm's real addresses (default off).
SERVICE_HIDE_NETVM: Final = "hide-netvm-addresses"

# Sysctls of the harden-network-interfaces service, per family (contract).
HARDEN_IPV4: Final = (("accept_redirects", "0"), ("send_redirects", "0"), ("accept_source_route", "0"))
HARDEN_IPV6: Final = (
    ("accept_redirects", "0"), ("accept_source_route", "0"), ("accept_ra", "0"), ("accept_dad", "0"),
    ("dad_transmits", "0"),
)

# --- files an administrator controls ---
NETWORK_HOOKS_DIR: Final = "/rw/config/network-hooks.d"
HOOK_TIMEOUT: Final = 30.0  # seconds one network hook may run

# --- kernel ---
NETNS_DIR: Final = "/run/netns"  # named network namespaces, as iproute2 keeps them
RT_TABLE_MAIN: Final = 254
RTPROT_BOOT: Final = 3  # what `ip route add` uses, as the shell scripts did
