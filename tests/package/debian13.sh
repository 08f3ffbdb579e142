#!/bin/sh
# The Debian 13 (trixie) lane: the package built, installed and tested on
# the distribution of Qubes 4.3's Debian template, from this (Debian, root)
# machine. The kernel is shared; everything else is trixie's.
#
#   1. a trixie root made with mmdebstrap from Debian's package registry
#      (the mirror this machine's apt uses), fresh on every run;
#   2. the source tree (tracked and new, not ignored files) copied in; the
#      build dependencies of debian/control installed with apt-get build-dep;
#      the .deb built there by dpkg-buildpackage with trixie's debhelper and
#      dh-python, whatever debian/ the tree holds;
#   3. the test tools from trixie's packages (python3-pytest ...; nothing
#      from PyPI), then, in the root:
#      - the unit tier on trixie's Python and libraries (source tree);
#      - tests/package/roundtrip.sh: stand-in Qubes packages, the .deb
#        installed with apt (dependencies from trixie), the integration tier
#        (the NetworkManager tests included, with the installed hook) run
#        against the installed programs, the stand-ins upgraded, purge;
#        QUBES_REQUIRE_NETNS=1, so nothing is silently left out.
#
# The root is used inside a private mount namespace (unshare --mount): its
# /proc, /sys, /dev and /run (a tmpfs: network namespaces of the tests live
# under its /run/netns, invisible to the host's `ip netns`) are mounted
# there only, so they vanish with the namespace, also on failure. Leftover
# processes of the root are killed by pid and the root is removed on exit.
#
#   sh tests/package/debian13.sh            (make test-debian13)
#
# Environment: DEBIAN13_MIRROR (default: this machine's Debian mirror),
# DEBIAN13_SUITE (default trixie), DEBIAN13_KEEP=1 keeps the root (its path
# is printed), DEBIAN13_UNIT=0 leaves out the unit tier, PYTEST_ARGS as for
# roundtrip.sh (default: tests/integration).
set -eu

REPO=$(cd "$(dirname "$0")/../.." && pwd)
SUITE=${DEBIAN13_SUITE:-trixie}
PKG=qubes-netvm-hotplug

step() { printf '\n=== debian13: %s (%ss)\n' "$*" "$(($(date +%s) - STARTED))"; }
fail() { printf 'debian13: FAILED: %s\n' "$*" >&2; exit 1; }
STARTED=$(date +%s)

[ "$(id -u)" -eq 0 ] || fail "run as root (chroot, mount and network namespaces)"
for tool in mmdebstrap unshare chroot git; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool is missing: run scripts/bootstrap.sh"
done

# The Debian archive this machine's apt uses (the URI serving its own
# release, not -security or -updates), unless DEBIAN13_MIRROR says otherwise.
host_mirror() {
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    apt-get indextargets --no-release-info --format '$(RELEASE) $(REPO_URI)' 2>/dev/null |
        awk -v c="$codename" '$1 == c { print $2; exit }'
}
MIRROR=${DEBIAN13_MIRROR:-$(host_mirror)}
[ -n "$MIRROR" ] || fail "no Debian mirror found in this machine's apt sources: set DEBIAN13_MIRROR"

VERSION=$(sed -n 's/^version = //p' "$REPO/setup.cfg")
[ -n "$VERSION" ] || fail "no version in setup.cfg"

ROOT=$(mktemp -d /var/tmp/qubes-netvm-hotplug-debian13.XXXXXX)

# Processes whose root directory is ROOT (left by a failed test): killed by
# pid. Then the root is removed, only once nothing is mounted below it in
# this namespace (the mounts were made in the private one, which is gone).
cleanup() {
    status=$?
    set +e
    for _ in 1 2 3; do
        pids=""
        for proc in /proc/[0-9]*; do
            [ "$(readlink "$proc/root" 2>/dev/null)" = "$ROOT" ] && pids="$pids ${proc#/proc/}"
        done
        [ -z "$pids" ] && break
        echo "debian13: killing processes left in the root:$pids"
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null
        sleep 1
    done
    if [ "${DEBIAN13_KEEP:-0}" = 1 ]; then
        echo "debian13: root kept at $ROOT"
    elif grep -q " $ROOT[/ ]" /proc/self/mountinfo; then
        echo "debian13: something is still mounted under $ROOT: not removed" >&2
    else
        rm -rf --one-file-system "$ROOT"
    fi
    printf 'debian13: %s after %ss\n' "$([ "$status" -eq 0 ] && echo PASSED || echo FAILED)" \
        "$(($(date +%s) - STARTED))"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 1. the root ---------------------------------------------------------------

step "mmdebstrap $SUITE from $MIRROR"
# No recommends, as the round trip installs ours (and the tests need none).
# In a private mount namespace: mmdebstrap mounts /proc, /sys and /dev in the
# root while it installs, which would stay in this namespace if it were killed.
unshare --mount --propagation private mmdebstrap --quiet --variant=apt --aptopt='APT::Install-Recommends "false"' \
    --include=ca-certificates "$SUITE" "$ROOT" "$MIRROR"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"

# --- 2. the source tree --------------------------------------------------------

# A clone with history (the round trip builds the previous release from its
# commit), its work tree then made this tree's, uncommitted changes included.
# Under /var/tmp: what the round trip's listing of / leaves out.
SRC=/var/tmp/build/$PKG-$VERSION
mkdir -p "$ROOT/var/tmp/build"
git clone --quiet --no-hardlinks --no-checkout "$REPO" "$ROOT$SRC"
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp -P --parents -t "$ROOT$SRC")

# --- 3. in the root, in a private mount namespace ------------------------------

# Test tools and what the tests drive, all from trixie (scripts/bootstrap.sh
# is the same list for Debian 12); man-db: roundtrip.sh looks the pages up.
# The unit tier needs our dependencies before the package brings them, and
# udev (udevadm) and groff-base for its checks of the rules and pages; git:
# the round trip reads the previous release from history; systemd: its
# systemd-analyze verify of the units.
TOOLS="python3-pytest python3-pytest-mock python3-hypothesis python3-pyroute2 python3-jeepney
nftables python3-nftables iproute2 iputils-ping conntrack util-linux procps
xenstore-utils dnsmasq-base bind9-dnsutils dbus-daemon network-manager man-db
udev groff-base git systemd"

# shellcheck disable=SC2016
INSIDE='
set -eu
step() { printf "\n=== debian13 (in the root): %s (%ss)\n" "$*" "$(($(date +%s) - STARTED))"; }
export DEBIAN_FRONTEND=noninteractive
cd "$SRC"
step "apt-get build-dep ./ (debian/control, from trixie)"
apt-get update -qq
apt-get build-dep -y -qq ./ >/dev/null
step "dpkg-buildpackage -b -us -uc (trixie debhelper $(dpkg-query -W -f "\${Version}" debhelper), dh-python $(dpkg-query -W -f "\${Version}" dh-python))"
dpkg-buildpackage -b -us -uc >../build.log 2>&1 || { tail -n 60 ../build.log; exit 1; }
DEB=$(ls "../${PKG}_"*_all.deb)
dpkg-deb --info "$DEB" | sed -n "s/^ *\(Version\|Depends\):/ \1:/p"
step "test tools from trixie"
# shellcheck disable=SC2086
apt-get install -y -qq $TOOLS >/dev/null
dpkg-query -W python3 python3-pyroute2 python3-nftables python3-jeepney network-manager nftables \
    xenstore-utils iproute2 python3-pytest python3-hypothesis | sed "s/^/  /"
if [ "${DEBIAN13_UNIT:-1}" = 1 ]; then
    step "the unit tier on trixie Python $(python3 -c "import platform; print(platform.python_version())")"
    python3 -m pytest -p no:cacheprovider -q tests/unit
fi
step "the package round trip (apt install, integration tier on the installed programs, purge)"
export QUBES_TEST_NMHOOK=/etc/NetworkManager/dispatcher.d/qubes-nmhook
VPY=/usr/bin/python3 sh tests/package/roundtrip.sh "$DEB"
'

step "in the root: build, install, test"
# ROOT is bind-mounted on itself: `ip netns exec` makes / a slave mount,
# which needs / to be a mount point in the chroot.
# shellcheck disable=SC2016
unshare --mount --propagation private sh -eu -c '
ROOT=$1; shift
mount --bind "$ROOT" "$ROOT"
mount -t proc proc "$ROOT/proc"
mount --rbind /sys "$ROOT/sys"
mount --rbind /dev "$ROOT/dev"
mount -t tmpfs -o mode=0755 tmpfs "$ROOT/run"
mount -t tmpfs -o mode=1777 tmpfs "$ROOT/tmp"
exec chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"
' sh "$ROOT" STARTED="$STARTED" PKG="$PKG" SRC="$SRC" TOOLS="$TOOLS" DEBIAN13_UNIT="${DEBIAN13_UNIT:-1}" \
    PYTEST_ARGS="${PYTEST_ARGS:-tests/integration}" sh -c "$INSIDE"
