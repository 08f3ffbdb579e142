"""A real NetworkManager managing the simulated netvm's uplink.

Debian's ``NetworkManager --no-daemon`` runs inside the netvm's network
namespace and a private mount namespace (``ip netns exec`` gives both, with
a sysfs of that network namespace) in which:

- ``/run`` (hence ``/var/run``), ``/etc/NetworkManager`` and
  ``/var/lib/NetworkManager`` are directories of this harness, bind-mounted,
  and ``/etc`` an overlay in which ``/etc/resolv.conf`` is a symlink to
  ``/run/NetworkManager/resolv.conf`` (as on Debian): nothing of the host's
  is touched;
- ``/sys`` is read-only, which tells NetworkManager that no udev will
  announce devices (otherwise it waits for udev forever);
- a private system ``dbus-daemon`` listens on ``/run/dbus/system_bus_socket``
  and activates the real ``nm-dispatcher`` on demand, as systemd's bus does;
- ``/run/qubes/qubesdb.sock`` leads to the QubesDB double, and
  ``/usr/lib/qubes/qubes-setup-dnat-to-ns`` (an overlay on ``/usr/lib``) is
  a wrapper starting the entry point under test, so the dispatcher hook runs
  unchanged with its built-in defaults, in NetworkManager's own environment.

The hook goes into the private ``dispatcher.d`` as shipped; or, with
``hook=None`` (the package round trip), ``/etc/NetworkManager/dispatcher.d``
is the system's own, as installed (our hook, and whatever else a package put
there), with only a sentinel added in the namespace's /etc overlay that
records each action after every other script has run for it (name order).
The bus socket
lives in a directory of the harness, so ``nmcli`` runs from outside with
``DBUS_SYSTEM_BUS_ADDRESS``. ``stop()`` ends every process of the mount
namespace (found by its namespace inode, killed by pid) and removes it all.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid

from .netns import run, wait_for
from .topology import SOURCE_ROOT

NM_BINARY = "/usr/sbin/NetworkManager"
DISPATCHER_CANDIDATES = ("/usr/libexec/nm-dispatcher", "/usr/lib/NetworkManager/nm-dispatcher")
UPLINK = "eth0"

NM_CONF = """\
[main]
plugins=keyfile
dns=default
rc-manager=symlink
no-auto-default=*

[logging]
level=INFO

[keyfile]
# Only the uplink: never lo, never a client's vif.
unmanaged-devices=except:interface-name:{uplink}

[connectivity]
enabled=false
"""

BUS_CONF = """\
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <servicedir>{services}</servicedir>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_type="method_return"/>
    <allow send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="signal"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
  </policy>
</busconfig>
"""

# No SystemdService= line: this bus activates by starting the program itself.
DISPATCHER_SERVICE = """\
[D-BUS Service]
Name=org.freedesktop.nm_dispatcher
Exec={dispatcher}
User=root
"""

# Run inside `ip netns exec`: its own mount namespace, /sys of the netns.
NAMESPACE_SCRIPT = """\
set -e
W="$1"
mount -o remount,ro /sys
mount --bind "$W/run" /run
mkdir -p /run/dbus /run/qubes /run/NetworkManager
ln -s "$QDB_SOCKET" /run/qubes/qubesdb.sock
O="$W/overlays"
mount -t tmpfs -o mode=0755 tmpfs "$O"
mkdir -p "$O/etc/upper" "$O/etc/work" "$O/lib/upper/qubes" "$O/lib/work"
chmod 0755 "$O/etc/upper" "$O/lib/upper" "$O/lib/upper/qubes"
# /etc: resolv.conf a symlink into /run, as on Debian with NetworkManager
# (a bind-mounted file could not be replaced by NetworkManager's rename).
rm -f "$O/etc/upper/resolv.conf"
ln -s /run/NetworkManager/resolv.conf "$O/etc/upper/resolv.conf"
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$O/etc/upper,workdir=$O/etc/work" /etc
if [ -n "$SYSTEM_DISPATCHER" ]; then
    # The system's dispatcher.d as it is; the rest of the configuration ours.
    mkdir -p /etc/NetworkManager/system-connections /etc/NetworkManager/conf.d /etc/NetworkManager/dispatcher.d
    mount --bind "$W/etc-nm/system-connections" /etc/NetworkManager/system-connections
    mount --bind "$W/etc-nm/conf.d" /etc/NetworkManager/conf.d
    cp "$W/etc-nm/NetworkManager.conf" /etc/NetworkManager/NetworkManager.conf
    cp "$W/sentinel" "/etc/NetworkManager/dispatcher.d/$SENTINEL"
    chmod 0755 "/etc/NetworkManager/dispatcher.d/$SENTINEL"
else
    mount --bind "$W/etc-nm" /etc/NetworkManager
fi
cp "$W/setup-dnat-wrapper" "$O/lib/upper/qubes/qubes-setup-dnat-to-ns"
chmod 0755 "$O/lib/upper/qubes/qubes-setup-dnat-to-ns"
mount -t overlay overlay -o "lowerdir=/usr/lib,upperdir=$O/lib/upper,workdir=$O/lib/work" /usr/lib
mkdir -p /var/lib/NetworkManager 2>/dev/null || :
mount --bind "$W/var-lib-nm" /var/lib/NetworkManager
dbus-daemon --config-file="$W/bus.conf" --nofork --nopidfile &
echo $! > "$W/dbus.pid"
i=0
while [ ! -S /run/dbus/system_bus_socket ]; do
    i=$((i + 1)); [ "$i" -lt 500 ] || { echo "no system bus" >&2; exit 1; }
    sleep 0.01
done
exec "$NM_BINARY" --no-daemon --debug
"""


# Sorts after every name a package would use (nm-dispatcher runs the scripts
# one after the other, in name order).
SENTINEL = "zz-qubes-netsim-sentinel"


def dispatcher_binary() -> str | None:
    return next((path for path in DISPATCHER_CANDIDATES if os.access(path, os.X_OK)), None)


def unavailable() -> str | None:
    """Why a real NetworkManager cannot run here, or None."""
    missing = [p for p in (NM_BINARY, "/usr/bin/nmcli") if not os.access(p, os.X_OK)]
    if dispatcher_binary() is None:
        missing.append("nm-dispatcher")
    if shutil.which("dbus-daemon") is None:
        missing.append("dbus-daemon")
    if missing:
        return f"real NetworkManager tests need {', '.join(missing)} (Debian: network-manager, dbus-daemon)"
    return None


def keyfile(uuid_: str, dns: list[str], *, address: str, gateway: str, address6: str | None = None,
            gateway6: str | None = None, dns6: list[str] | None = None) -> str:
    """A keyfile connection profile for the uplink: static IPv4 with ``dns``;
    static IPv6 with ``dns6`` when ``address6`` is given, else no IPv6."""
    lines = [
        "[connection]", "id=uplink", f"uuid={uuid_}", "type=ethernet", f"interface-name={UPLINK}",
        "autoconnect=false", "", "[ethernet]", "", "[ipv4]", "method=manual",
        f"address1={address},{gateway}",
    ]
    if dns:
        lines.append("dns=" + "".join(f"{server};" for server in dns))
    if address6 is None:
        lines += ["", "[ipv6]", "method=disabled", ""]
    else:
        lines += ["", "[ipv6]", "method=manual", f"address1={address6},{gateway6}"]
        if dns6:
            lines.append("dns=" + "".join(f"{server};" for server in dns6))
        lines.append("")
    return "\n".join(lines)


class SimNetworkManager:
    """NetworkManager for the uplink of ``netns`` (a Netns name), with our
    dispatcher hook (``hook``, or None: the system's dispatcher.d as
    installed), running ``tool_argv`` as qubes-setup-dnat-to-ns."""

    def __init__(self, netns: str, workdir: str, *, hook: str | None, tool_argv: list[str], qubesdb_socket: str,
                 address: str, gateway: str, dns: list[str], address6: str | None = None,
                 gateway6: str | None = None, dns6: list[str] | None = None) -> None:
        self.netns = netns
        self.dir = os.path.join(workdir, f"nm-{uuid.uuid4().hex[:8]}")
        self.hook = hook
        self.tool_argv = tool_argv
        self.qubesdb_socket = qubesdb_socket
        self.address, self.gateway = address, gateway
        self.uuid = str(uuid.uuid4())
        self.initial_dns = dns
        self.address6, self.gateway6, self.initial_dns6 = address6, gateway6, dns6
        self.proc: subprocess.Popen[str] | None = None
        self.log_path = os.path.join(self.dir, "NetworkManager.log")
        self.runs_path = os.path.join(self.dir, "hook-runs.log")
        self.dispatched_path = os.path.join(self.dir, "dispatched.log")
        self._mnt_ns: int | None = None

    @property
    def bus_address(self) -> str:
        return f"unix:path={os.path.join(self.dir, 'run', 'dbus', 'system_bus_socket')}"

    @property
    def resolv_conf(self) -> str:
        """What the namespace's /etc/resolv.conf leads to (NetworkManager writes it)."""
        return os.path.join(self.dir, "run", "NetworkManager", "resolv.conf")

    # --- building ---

    def _write(self, relative: str, text: str, mode: int = 0o644) -> str:
        path = os.path.join(self.dir, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            handle.write(text)
        os.chmod(path, mode)
        return path

    def _prepare(self) -> None:
        for sub in ("run", "etc-nm/system-connections", "etc-nm/conf.d", "var-lib-nm", "overlays", "services"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        os.chmod(self.dir, 0o755)
        self._write("etc-nm/NetworkManager.conf", NM_CONF.format(uplink=UPLINK))
        self._write("etc-nm/system-connections/uplink.nmconnection",
                    keyfile(self.uuid, self.initial_dns, address=self.address, gateway=self.gateway,
                            address6=self.address6, gateway6=self.gateway6, dns6=self.initial_dns6), 0o600)
        if self.hook is not None:
            # The hook exactly as shipped, with the modes NetworkManager demands.
            hook = os.path.join(self.dir, "etc-nm", "dispatcher.d", "qubes-nmhook")
            os.makedirs(os.path.dirname(hook), exist_ok=True)
            shutil.copyfile(self.hook, hook)
            os.chmod(hook, 0o755)
        self._write("sentinel", (
            "#!/bin/sh\n"
            f"echo \"$(date +%s.%N) ${{2:-?}} ${{1:--}}\" >> {_quote(self.dispatched_path)}\n"
        ), 0o755)
        self._write("bus.conf", BUS_CONF.format(services=os.path.join(self.dir, "services")))
        self._write("services/org.freedesktop.nm_dispatcher.service",
                    DISPATCHER_SERVICE.format(dispatcher=dispatcher_binary()))
        # What /usr/lib/qubes/qubes-setup-dnat-to-ns is in the namespace: it
        # records each run (the dispatcher action, its exit status) and passes
        # the status on, so the hook sees exactly what the tool said.
        # PYTHONPATH: the code under test, as in SimNetvm.env().
        # The program resolved here, outside the namespace: the path an
        # installed package gives it may be a symlink through the very path
        # this wrapper takes over in there (the wrapper would run itself).
        program = os.path.realpath(self.tool_argv[0])
        tool = " ".join(_quote(arg) for arg in ["env", f"PYTHONPATH={SOURCE_ROOT}", program, *self.tool_argv[1:]])
        self._write("setup-dnat-wrapper", (
            "#!/bin/sh\n"
            f"{tool} \"$@\" 2>>{_quote(os.path.join(self.dir, 'tool.stderr'))}\n"
            "status=$?\n"
            f"echo \"$(date +%s.%N) ${{NM_DISPATCHER_ACTION:-?}} $status ${{DEVICE_IFACE:--}}\""
            f" >> {_quote(self.runs_path)}\n"
            "exit $status\n"
        ), 0o755)

    def start(self, timeout: float = 20.0) -> SimNetworkManager:
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        self._prepare()
        # NetworkManager configures the uplink itself: what the simulation put
        # on it goes first (else NetworkManager would take it for an external
        # connection and dispatch for that too).
        run(["ip", "netns", "exec", self.netns, "ip", "addr", "flush", "dev", UPLINK])
        # No duplicate address detection on this private link: activation
        # would wait for it (and the simulation uses nodad everywhere).
        run(["ip", "netns", "exec", self.netns, "sysctl", "-q", "-w", f"net.ipv6.conf.{UPLINK}.accept_dad=0"])
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "QDB_SOCKET": self.qubesdb_socket, "NM_BINARY": NM_BINARY,
               "SYSTEM_DISPATCHER": "1" if self.hook is None else "", "SENTINEL": SENTINEL}
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, "sh", "-c", NAMESPACE_SCRIPT, "sh", self.dir],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, text=True,
                start_new_session=True,
            )
        wait_for(lambda: self._running(), timeout=timeout, what="NetworkManager on its private bus")
        self._mnt_ns = os.stat(f"/proc/{self.proc.pid}/ns/mnt").st_ino

    def _running(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"NetworkManager exited ({self.proc.returncode}): {self.log()[-2000:]}")
        if not os.path.exists(self.bus_address.split("=", 1)[1]):
            return False
        result = self.nmcli("-t", "-f", "RUNNING", "general", check=False, timeout=5)
        return result.returncode == 0 and result.stdout.strip() == "running"

    # --- using ---

    def nmcli(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DBUS_SYSTEM_BUS_ADDRESS": self.bus_address}
        result = run(["nmcli", *args], check=False, timeout=timeout, env=env)
        if check and result.returncode != 0:
            raise RuntimeError(f"nmcli {' '.join(args)} failed: {result.stderr.strip()}\n{self.log()[-3000:]}")
        return result

    def hook_runs(self) -> list[tuple[float, str, int]]:
        """(wall-clock time, dispatcher action, exit status) of each run of the tool."""
        if not os.path.exists(self.runs_path):
            return []
        runs = []
        with open(self.runs_path) as handle:
            for line in handle:
                stamp, action, status, _iface = line.split()
                runs.append((float(stamp), action, int(status)))
        return runs

    def wait_run(self, action: str, after: int, timeout: float = 10.0) -> list[tuple[float, str, int]]:
        """Wait until the tool has run for ``action`` beyond the first
        ``after`` runs; the runs beyond those."""
        wait_for(lambda: action in [a for _, a, _ in self.hook_runs()[after:]], timeout=timeout,
                 what=f"the hook's run for {action!r}")
        return self.hook_runs()[after:]

    def dispatched(self) -> list[str]:
        """The actions the sentinel saw, in order (hook=None only): each one
        after every other script in dispatcher.d had run for it."""
        if not os.path.exists(self.dispatched_path):
            return []
        with open(self.dispatched_path) as handle:
            return [line.split()[1] for line in handle if line.strip()]

    def wait_dispatched(self, action: str, after: int, timeout: float = 10.0) -> list[str]:
        """Wait until the sentinel has seen ``action`` beyond the first ``after``
        actions; the actions beyond those."""
        wait_for(lambda: action in self.dispatched()[after:], timeout=timeout,
                 what=f"the dispatcher's scripts for {action!r}")
        return self.dispatched()[after:]

    def log(self) -> str:
        with open(self.log_path, errors="replace") as handle:
            return handle.read()

    def tool_stderr(self) -> str:
        path = os.path.join(self.dir, "tool.stderr")
        if not os.path.exists(path):
            return ""
        with open(path, errors="replace") as handle:
            return handle.read()

    # --- teardown ---

    def _namespace_pids(self) -> list[int]:
        if self._mnt_ns is None:
            return []
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.stat(f"/proc/{entry}/ns/mnt").st_ino == self._mnt_ns:
                    pids.append(int(entry))
            except OSError:
                continue
        return pids

    def stop(self) -> None:
        """End NetworkManager, the bus and nm-dispatcher; remove the files."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        deadline = time.monotonic() + 5
        while True:
            pids = self._namespace_pids()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGTERM if time.monotonic() < deadline - 2 else signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if os.path.isdir(self.dir):
            shutil.rmtree(self.dir, ignore_errors=True)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"
