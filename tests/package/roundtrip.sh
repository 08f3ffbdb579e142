#!/bin/sh
# The .deb as an administrator would use it, on this (Debian, root) machine:
#
#   1. build stand-in originals as dpkg packages of the names Qubes uses
#      (qubes-core-agent-networking, qubes-core-agent-network-manager) and
#      install them;
#   2. apt-get install ./qubes-netvm-hotplug_*.deb (dependencies from Debian);
#   3. check the originals are diverted to <path>.qubes-orig, unchanged;
#   4. run the namespace integration tier against the INSTALLED entry points
#      and dispatcher hook (QUBES_NETSIM_BIN), the test runner from .venv;
#   5. upgrade the stand-in originals: ours must stay, theirs go aside;
#   6. apt-get purge qubes-netvm-hotplug: the originals are back byte for
#      byte, no diversion and no file of ours is left.
#
# Everything installed here is purged again on exit (also on failure),
# including dependencies apt pulled in that were not installed before.
#
#   sh tests/package/roundtrip.sh build/packages/qubes-netvm-hotplug_0.1.0_all.deb
#
# PYTEST_ARGS (default: tests/integration) chooses the tests of step 4.
set -eu

DEB=$(readlink -f "$1")
REPO=$(cd "$(dirname "$0")/../.." && pwd)
VPY=${VPY:-$REPO/.venv/bin/python}
PKG=qubes-netvm-hotplug
PATHS="/etc/xen/scripts/vif-route-qubes /usr/lib/qubes/qubes-setup-dnat-to-ns /etc/NetworkManager/dispatcher.d/qubes-nmhook"
FAKES="qubes-core-agent-networking qubes-core-agent-network-manager"
export DEBIAN_FRONTEND=noninteractive

step() { printf '\n=== roundtrip: %s\n' "$*"; }
fail() { printf 'roundtrip: FAILED: %s\n' "$*" >&2; exit 1; }
installed() { [ "$(dpkg-query -W -f '${db:Status-Status}' "$1" 2>/dev/null)" = installed ]; }
our_diversions() { dpkg-divert --list | grep -c " by $PKG\$" || true; }

[ "$(id -u)" -eq 0 ] || fail "run as root"
[ -f "$DEB" ] || fail "no package at $1"
for p in $PKG $FAKES; do
    if dpkg-query -W "$p" >/dev/null 2>&1; then
        fail "$p is already known to dpkg: this test would change an installation it did not make"
    fi
done
for path in $PATHS; do
    if [ -e "$path" ] || [ -L "$path" ]; then fail "$path exists already"; fi
done

WORK=$(mktemp -d /tmp/qubes-netvm-hotplug-roundtrip.XXXXXX)
dpkg-query -W -f '${Package}\n' | sort > "$WORK/packages-before"

cleanup() {
    status=$?
    set +e
    step "clean-up (the machine as it was)"
    for p in $PKG $FAKES; do
        if dpkg-query -W "$p" >/dev/null 2>&1; then dpkg --purge "$p" >/dev/null; fi
    done
    # Diversions a broken postrm would leave: removed, originals renamed back.
    dpkg-divert --list | sed -n "s/^diversion of \(.*\) to .* by $PKG\$/\1/p" | while read -r path; do
        echo "removing a diversion left behind: $path"
        dpkg-divert --package $PKG --remove --rename "$path"
    done
    # Stand-in originals the diversions kept from their packages' purge.
    for path in $PATHS; do
        if [ -f "$path.qubes-orig" ] && ! dpkg-query -S "$path.qubes-orig" >/dev/null 2>&1; then rm -f "$path.qubes-orig"; fi
        if [ -f "$path" ] && ! dpkg-query -S "$path" >/dev/null 2>&1 && grep -q "stand-in for" "$path"; then rm -f "$path"; fi
    done
    dpkg-query -W -f '${Package}\n' | sort > "$WORK/packages-after"
    added=$(comm -13 "$WORK/packages-before" "$WORK/packages-after" | tr '\n' ' ')
    if [ -n "$added" ]; then
        echo "purging what apt pulled in: $added"
        # shellcheck disable=SC2086
        apt-get purge -y -qq $added >/dev/null
    fi
    rm -rf "$WORK"
    [ "$(our_diversions)" -eq 0 ] || echo "roundtrip: diversions of $PKG left behind" >&2
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 1. stand-in originals ----------------------------------------------

# fake_package NAME VERSION PATH...: a package owning PATHs as Qubes' does
# (executables; those under /etc are conffiles), each file saying who it is.
# Like the real packages, each also has a file nobody diverts: dpkg lets a
# package whose every file is diverted "disappear" when another package
# sharing a directory with it is unpacked.
fake_package() {
    name=$1 version=$2
    shift 2
    root="$WORK/$name-$version"
    mkdir -p "$root/DEBIAN"
    for path in "$@"; do
        mkdir -p "$root$(dirname "$path")"
        printf '#!/bin/sh\n# stand-in for %s of %s %s\nexit 0\n' "$path" "$name" "$version" > "$root$path"
        chmod 0755 "$root$path"
        case "$path" in /etc/*) echo "$path" >> "$root/DEBIAN/conffiles" ;; esac
    done
    cat > "$root/DEBIAN/control" <<EOF
Package: $name
Version: $version
Architecture: all
Maintainer: roundtrip test <roundtrip@example.org>
Description: stand-in original of $name (qubes-netvm-hotplug package test)
EOF
    dpkg-deb --root-owner-group --build "$root" "$WORK/${name}_${version}_all.deb" >/dev/null
    echo "$WORK/${name}_${version}_all.deb"
}

# sums_of SUFFIX: sha256 of each Qubes path with SUFFIX, in PATHS order
sums_of() {
    for path in $PATHS; do sha256sum < "$path$1" | cut -d' ' -f1; done
}

step "stand-in originals installed as dpkg packages"
NET_FILES="/etc/xen/scripts/vif-route-qubes /usr/lib/qubes/qubes-setup-dnat-to-ns /etc/xen/scripts/vif-qubes-nat.sh"
# shellcheck disable=SC2086
NET1=$(fake_package qubes-core-agent-networking 4.99.0-1 $NET_FILES)
# shellcheck disable=SC2086
NET2=$(fake_package qubes-core-agent-networking 4.99.1-1 $NET_FILES)
NM1=$(fake_package qubes-core-agent-network-manager 4.99.0-1 /etc/NetworkManager/dispatcher.d/qubes-nmhook \
    /usr/lib/qubes/qubes-fix-nm-conf.sh)
apt-get install -y -qq "$NET1" "$NM1" >/dev/null
ORIG_SUMS=$(sums_of "")
echo "$ORIG_SUMS"

# --- 2. install ---------------------------------------------------------------

step "apt-get install $DEB"
apt-get install -y --no-install-recommends "$DEB"
installed $PKG || fail "$PKG not installed"
dpkg-query -W -f '${Package} ${Version}: Depends: ${Depends}\n' $PKG
# The dependencies are the distribution's packages, and the installed
# programs see those (they put only /usr/lib/python3/dist-packages on the path).
for dep in python3-pyroute2 python3-nftables python3-jeepney; do
    installed $dep || fail "$dep (from Debian) not installed"
    dpkg-query -W "$dep"
done
origin=$(/usr/bin/python3 -IS -c 'import sys; sys.path.append("/usr/lib/python3/dist-packages"); import pyroute2, nftables, jeepney; print(pyroute2.__file__, nftables.__file__, jeepney.__file__)')
echo "the installed programs import: $origin"
for file in $origin; do
    dpkg -S "$file" >/dev/null 2>&1 || fail "$file belongs to no Debian package"
done

# --- 3. diversions ------------------------------------------------------------

step "the originals are diverted, unchanged"
dpkg-divert --list | grep " by $PKG\$" || true
[ "$(our_diversions)" -eq 3 ] || fail "expected 3 diversions by $PKG"
for path in $PATHS; do
    [ "$(dpkg-divert --truename "$path")" = "$path.qubes-orig" ] || fail "$path not diverted to $path.qubes-orig"
    target=$(readlink -f "$path")
    case "$target" in /usr/lib/$PKG/*) ;; *) fail "$path is not ours (-> $target)" ;; esac
    [ -x "$target" ] || fail "$target is not executable"
done
[ "$(sums_of .qubes-orig)" = "$ORIG_SUMS" ] || fail "the diverted originals changed"
fakes_still_there() {
    for p in $FAKES; do installed "$p" || fail "$p is no longer installed ($1)"; done
}
fakes_still_there "after the install"
/etc/xen/scripts/vif-route-qubes --help | head -n 1
/usr/lib/qubes/qubes-setup-dnat-to-ns --help | head -n 1
man -w vif-route-qubes qubes-setup-dnat-to-ns

# --- 4. the integration tier on the installed programs --------------------------

step "integration tier against the installed entry points"
BIN="$WORK/bin"
mkdir "$BIN"
ln -s /etc/xen/scripts/vif-route-qubes /usr/lib/qubes/qubes-setup-dnat-to-ns \
    /etc/NetworkManager/dispatcher.d/qubes-nmhook "$BIN/"
export QUBES_NETSIM_BIN="$BIN" QUBES_REQUIRE_NETNS=1
chosen=$("$VPY" -c 'from qubes_netsim.topology import bin_path; print(bin_path("vif-route-qubes"), bin_path("qubes-setup-dnat-to-ns"))')
[ "$chosen" = "$BIN/vif-route-qubes $BIN/qubes-setup-dnat-to-ns" ] || fail "the simulator would run $chosen"
# shellcheck disable=SC2086
(cd "$REPO" && "$VPY" -m pytest -p no:cacheprovider ${PYTEST_ARGS:-tests/integration})
unset QUBES_NETSIM_BIN

# --- 5. an upgrade of the originals' package ---------------------------------------

step "upgrade of qubes-core-agent-networking: it must not overwrite ours"
apt-get install -y -qq "$NET2" >/dev/null
dpkg-query -W qubes-core-agent-networking
for path in $PATHS; do
    case "$(readlink -f "$path")" in /usr/lib/$PKG/*) ;; *) fail "the upgrade replaced $path" ;; esac
done
grep -q "4.99.1-1" /etc/xen/scripts/vif-route-qubes.qubes-orig || fail "the upgrade's file is not at .qubes-orig"
fakes_still_there "after the upgrade"
NEW_SUMS=$(sums_of .qubes-orig)

# --- 6. purge -------------------------------------------------------------------------

step "apt-get purge $PKG: the originals come back"
dpkg -L $PKG > "$WORK/ours"
apt-get purge -y $PKG
! installed $PKG || fail "$PKG still installed"
[ "$(our_diversions)" -eq 0 ] || fail "diversions of $PKG left"
for path in $PATHS; do
    if [ ! -f "$path" ] || [ -L "$path" ]; then fail "$path is not the original file again"; fi
    [ ! -e "$path.qubes-orig" ] || fail "$path.qubes-orig left behind"
done
[ "$(sums_of "")" = "$NEW_SUMS" ] || fail "the originals are not back byte for byte"
fakes_still_there "after the purge"
# shellcheck disable=SC2086
dpkg-query -S $PATHS
left=""
while read -r file; do
    case "$file" in /etc/xen/scripts/vif-route-qubes|/usr/lib/qubes/qubes-setup-dnat-to-ns|/etc/NetworkManager/dispatcher.d/qubes-nmhook) continue ;; esac
    if [ -e "$file" ] && [ ! -d "$file" ]; then left="$left $file"; fi
done < "$WORK/ours"
for dir in /usr/lib/$PKG /usr/lib/python3/dist-packages/qubesnet /usr/lib/python3/dist-packages/vif_route_qubes \
    /usr/lib/python3/dist-packages/setup_dnat_to_ns; do
    [ ! -e "$dir" ] || left="$left $dir"
done
[ -z "$left" ] || fail "left behind:$left"
echo "originals back byte for byte; nothing of $PKG left"

step "PASSED"
