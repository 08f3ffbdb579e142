#!/bin/sh
# The .deb as an administrator would use it, on this (Debian, root) machine,
# with the real neighbours:
#
#   1. stand-in originals, installed as dpkg packages of the names Qubes uses
#      (qubes-core-agent-networking, qubes-core-agent-network-manager) at
#      the real paths; each original appends every run of its own to a log;
#   2. our 0.1.0 package, built from its commit (OLD_COMMIT), installed: it
#      diverted the originals to <path>.qubes-orig, and a real NetworkManager
#      with the system's dispatcher.d runs the original hook there
#      (tests/package/installed_dispatcher.py must FAIL on it: the check
#      catches the old bug);
#   3. apt-get install of this package, an upgrade from 0.1.0: every
#      diversion moved into /usr/lib/qubes-netvm-hotplug/originals, the
#      originals unchanged (bytes and mode), no module of ours in
#      site-packages, byte code compiled, units enabled and verified;
#   4. the namespace integration tier against the INSTALLED entry points
#      (QUBES_NETSIM_BIN: /etc/xen/scripts/vif-route-qubes run as libxl
#      would, /usr/lib/qubes/qubes-setup-dnat-to-ns), the test runner from
#      .venv; then the real NetworkManager with the system's dispatcher.d:
#      ours runs on each action, the originals never run (their log stays
#      empty);
#   5. an upgrade of the stand-in originals: ours stays, their new file
#      lands in originals/;
#   6. apt-get purge: every original back byte for byte with its mode, no
#      diversion, and a listing of / shows nothing of ours left.
#
# Everything installed here is purged again on exit (also on failure),
# including dependencies our apt-get calls pulled in (only those: other
# work on the machine may install packages meanwhile, not ours to remove).
#
#   sh tests/package/roundtrip.sh build/packages/qubes-netvm-hotplug_0.2.0_all.deb
#
# PYTEST_ARGS (default: tests/integration) chooses the tests of step 4.
# The 0.1.0 package is built from OLD_COMMIT, which a clone with history has.
set -eu

DEB=$(readlink -f "$1")
REPO=$(cd "$(dirname "$0")/../.." && pwd)
VPY=${VPY:-$REPO/.venv/bin/python}
PKG=qubes-netvm-hotplug
ORIGINALS=/usr/lib/$PKG/originals
PATHS="/etc/xen/scripts/vif-route-qubes /usr/lib/qubes/qubes-setup-dnat-to-ns /etc/NetworkManager/dispatcher.d/qubes-nmhook"
FAKES="qubes-core-agent-networking qubes-core-agent-network-manager"
# The last commit of 0.1.0 (main before the originals moved to originals/).
OLD_COMMIT=${OLD_COMMIT:-5b5f5574bd6844c1f6d671bd48c453ec076173ff}
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
for path in $PATHS /usr/lib/$PKG /usr/share/$PKG; do
    if [ -e "$path" ] || [ -L "$path" ]; then fail "$path exists already"; fi
done
git -C "$REPO" cat-file -e "$OLD_COMMIT^{commit}" 2>/dev/null ||
    fail "commit $OLD_COMMIT (0.1.0) is not in $REPO: run this in a clone with history"

WORK=$(mktemp -d /tmp/qubes-netvm-hotplug-roundtrip.XXXXXX)
chmod 0755 "$WORK"
RUNLOG=$WORK/originals-runs.log
: > "$WORK/added-by-us"

# Diversions of ours a broken postrm would leave: removed, the original
# renamed back where its directory still exists.
remove_our_diversions() {
    dpkg-divert --list | sed -n "s/^diversion of \(.*\) to .* by $PKG\$/\1/p" | while read -r path; do
        echo "removing a diversion left behind: $path"
        if [ -d "${path%/*}" ]; then
            dpkg-divert --package $PKG --remove --rename "$path"
        else
            dpkg-divert --package $PKG --remove --no-rename "$path"
        fi
    done
}

cleanup() {
    status=$?
    set +e
    step "clean-up (the machine as it was)"
    # Ours first, while the stand-ins' directories still exist. If its
    # postrm fails (a broken or half-done migration), the diversions are
    # removed here, originals renamed back, and the purge tried again.
    if dpkg-query -W $PKG >/dev/null 2>&1 && ! dpkg --purge $PKG >/dev/null; then
        remove_our_diversions
        dpkg --purge $PKG >/dev/null
    fi
    for p in $FAKES; do
        if dpkg-query -W "$p" >/dev/null 2>&1; then dpkg --purge "$p" >/dev/null; fi
    done
    remove_our_diversions
    # Stand-in originals the diversions kept from their packages' purge.
    for path in $PATHS; do
        for file in "$path" "$path.qubes-orig" "$ORIGINALS/${path##*/}"; do
            if [ -f "$file" ] && ! dpkg-query -S "$file" >/dev/null 2>&1 && grep -q "stand-in for" "$file"; then
                rm -f "$file"
            fi
        done
    done
    rmdir "$ORIGINALS" "/usr/lib/$PKG" 2>/dev/null
    added=""
    # shellcheck disable=SC2013
    for p in $(sort -u "$WORK/added-by-us"); do
        case " $PKG $FAKES " in *" $p "*) continue ;; esac
        if installed "$p"; then added="$added $p"; fi
    done
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
# (executables; those under /etc are conffiles), each file saying who it is
# and appending each of its runs to RUNLOG. Like the real packages, each
# also has a file nobody diverts: dpkg lets a package whose every file is
# diverted "disappear" when another package sharing a directory with it is
# unpacked. qubes-setup-dnat-to-ns has an unusual mode, which must survive.
fake_package() {
    name=$1 version=$2
    shift 2
    root="$WORK/$name-$version"
    mkdir -p "$root/DEBIAN"
    for path in "$@"; do
        mkdir -p "$root$(dirname "$path")"
        # shellcheck disable=SC2016
        printf '#!/bin/sh\n# stand-in for %s of %s %s\necho "$(date +%%s.%%N) %s %s $0 $*" >> %s\nexit 0\n' \
            "$path" "$name" "$version" "$name" "$version" "$RUNLOG" > "$root$path"
        case "$path" in */qubes-setup-dnat-to-ns) chmod 0754 "$root$path" ;; *) chmod 0755 "$root$path" ;; esac
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

# state_of DIR [SUFFIX]: "sha256 mode owner" of each Qubes path's file, in
# PATHS order, as found in DIR (by base name), or at the path itself with
# SUFFIX (DIR empty).
state_of() {
    for path in $PATHS; do
        file=${1:+$1/${path##*/}}
        file=${file:-$path${2:-}}
        if [ ! -f "$file" ] || [ -L "$file" ]; then echo "missing $file"; continue; fi
        printf '%s %s\n' "$(sha256sum < "$file" | cut -d' ' -f1)" "$(stat -c '%a %U:%G' "$file")"
    done
}

# Every path on this machine whose name is one of ours (the stand-in
# originals' paths included), outside the kernel's and the test's.
names_of_ours() {
    find / \( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /tmp -o -path /var/tmp -o -path /work \
        -o -path "$REPO" \) -prune -o \( -name "*$PKG*" -o -name qubesnet -o -name vif_route_qubes \
        -o -name setup_dnat_to_ns -o -name 'qubes-vif-*' -o -name 'qubes-setup-dnat-to-ns*' \
        -o -name 'qubes-nmhook*' -o -name 'vif-route-qubes*' -o -name '*-qubes-vif-reconcile.conf' \
        -o -name '*-qubes-vif-route.rules' \) -print | sort
}

installed_packages() { dpkg-query -W -f '${db:Status-Status} ${Package}\n' | sed -n 's/^installed //p' | sort; }

# apt_install ARG...: apt-get install, noting the packages it added (the
# clean-up purges those).
apt_install() {
    installed_packages > "$WORK/before-apt"
    apt_status=0
    apt-get install "$@" || apt_status=$?
    installed_packages | comm -13 "$WORK/before-apt" - >> "$WORK/added-by-us"
    return $apt_status
}

# originals_ran: how many runs of a stand-in original the log holds.
originals_ran() { if [ -f "$RUNLOG" ]; then wc -l < "$RUNLOG"; else echo 0; fi; }

step "stand-in originals installed as dpkg packages"
NET_FILES="/etc/xen/scripts/vif-route-qubes /usr/lib/qubes/qubes-setup-dnat-to-ns /etc/xen/scripts/vif-qubes-nat.sh"
# shellcheck disable=SC2086
NET1=$(fake_package qubes-core-agent-networking 4.99.0-1 $NET_FILES)
# shellcheck disable=SC2086
NET2=$(fake_package qubes-core-agent-networking 4.99.1-1 $NET_FILES)
NM1=$(fake_package qubes-core-agent-network-manager 4.99.0-1 /etc/NetworkManager/dispatcher.d/qubes-nmhook \
    /usr/lib/qubes/qubes-fix-nm-conf.sh)
apt_install -y -qq "$NET1" "$NM1" >/dev/null
ORIG_STATE=$(state_of "")
echo "$ORIG_STATE"
names_of_ours > "$WORK/names-before"

# The installed entry points, where the simulator runs them from.
BIN="$WORK/bin"
mkdir "$BIN"
ln -s /etc/xen/scripts/vif-route-qubes /usr/lib/qubes/qubes-setup-dnat-to-ns \
    /etc/NetworkManager/dispatcher.d/qubes-nmhook "$BIN/"

# dispatcher_check: tests/package/installed_dispatcher.py (real
# NetworkManager, the system's dispatcher.d), output in $WORK/dispatcher.out.
dispatcher_check() {
    (cd "$REPO" && QUBES_NETSIM_BIN="$BIN" QUBES_REQUIRE_NETNS=1 QUBES_ROUNDTRIP_ORIGINALS_LOG="$RUNLOG" \
        "$VPY" -m pytest -p no:cacheprovider -s tests/package/installed_dispatcher.py) > "$WORK/dispatcher.out" 2>&1
}

# --- 2. 0.1.0, and the bug it had ---------------------------------------------

step "0.1.0 built from $OLD_COMMIT and installed"
mkdir "$WORK/old"
git -C "$REPO" archive --prefix=$PKG-0.1.0/ "$OLD_COMMIT" | tar -x -C "$WORK/old"
(cd "$WORK/old/$PKG-0.1.0" && dpkg-buildpackage -b -us -uc) > "$WORK/old/build.log" 2>&1 ||
    { tail -n 30 "$WORK/old/build.log"; fail "0.1.0 did not build"; }
apt_install -y -qq --no-install-recommends "$WORK/old/${PKG}_0.1.0_all.deb" >/dev/null
dpkg-query -W $PKG
for path in $PATHS; do
    [ "$(dpkg-divert --truename "$path")" = "$path.qubes-orig" ] || fail "0.1.0 did not divert $path to .qubes-orig"
done
ls -l /etc/NetworkManager/dispatcher.d/

step "0.1.0 under a real NetworkManager: the check must catch the original hook running"
if dispatcher_check; then
    cat "$WORK/dispatcher.out"
    fail "installed_dispatcher.py passed on 0.1.0, whose original hook nm-dispatcher runs: it cannot catch the bug"
fi
grep -q "the replaced original ran" "$WORK/dispatcher.out" ||
    { cat "$WORK/dispatcher.out"; fail "installed_dispatcher.py failed on 0.1.0, but not for the original's runs"; }
echo "caught: the original hook ran $(grep -c 'qubes-nmhook.qubes-orig' "$RUNLOG") times under 0.1.0, for:" \
    "$(grep 'qubes-nmhook.qubes-orig' "$RUNLOG" | awk '{print $NF}' | tr '\n' ' ')"
: > "$RUNLOG"

step "an upgrade from 0.1.0 that dpkg aborts: preinst upgrade, then postrm abort-upgrade"
# What dpkg runs when unpacking the new version fails after its preinst:
# the diversions must be back where 0.1.0's scripts expect them.
dpkg-deb -e "$DEB" "$WORK/new-control"
sh "$WORK/new-control/preinst" upgrade 0.1.0
for path in $PATHS; do
    [ "$(dpkg-divert --truename "$path")" = "$ORIGINALS/${path##*/}" ] || fail "preinst upgrade did not move $path's diversion"
done
[ "$(state_of "$ORIGINALS")" = "$ORIG_STATE" ] || fail "preinst upgrade changed the originals"
sh "$WORK/new-control/postrm" abort-upgrade 0.1.0
for path in $PATHS; do
    [ "$(dpkg-divert --truename "$path")" = "$path.qubes-orig" ] || fail "abort-upgrade did not give $path's diversion back to 0.1.0"
done
[ "$(state_of "" .qubes-orig)" = "$ORIG_STATE" ] || fail "the originals are not back at <path>.qubes-orig: $(state_of "" .qubes-orig)"
[ ! -e "$ORIGINALS" ] || fail "abort-upgrade left $ORIGINALS"
echo "aborted upgrade: 0.1.0's diversions and files back at <path>.qubes-orig"

# --- 3. the upgrade to this package -----------------------------------------------

step "apt-get install $DEB (upgrade from 0.1.0)"
apt_install -y --no-install-recommends "$DEB"
installed $PKG || fail "$PKG not installed"
dpkg-query -W -f '${Package} ${Version}: Depends: ${Depends}\n' $PKG
[ "$(dpkg-query -W -f '${Version}' $PKG)" != 0.1.0 ] || fail "still 0.1.0"
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

step "the originals are diverted into $ORIGINALS, unchanged; nothing of theirs is left where it runs"
dpkg-divert --list | grep " by $PKG\$" || true
[ "$(our_diversions)" -eq 3 ] || fail "expected 3 diversions by $PKG"
for path in $PATHS; do
    [ "$(dpkg-divert --truename "$path")" = "$ORIGINALS/${path##*/}" ] || fail "$path not diverted into $ORIGINALS"
    if [ -e "$path.qubes-orig" ] || [ -L "$path.qubes-orig" ]; then fail "$path.qubes-orig left by 0.1.0"; fi
    target=$(readlink -f "$path")
    case "$target" in /usr/lib/$PKG/*) ;; *) fail "$path is not ours (-> $target)" ;; esac
    case "$target" in $ORIGINALS/*) fail "$path leads to an original" ;; esac
    [ -x "$target" ] || fail "$target is not executable"
done
[ "$(state_of "$ORIGINALS")" = "$ORIG_STATE" ] || fail "the diverted originals changed: $(state_of "$ORIGINALS")"
ls -l /etc/NetworkManager/dispatcher.d/ "$ORIGINALS"
others=$(find /etc/NetworkManager/dispatcher.d /etc/xen/scripts /usr/lib/qubes -mindepth 1 -name '*qubes*' \
    ! -name qubes-nmhook ! -name vif-route-qubes ! -name qubes-setup-dnat-to-ns \
    ! -name vif-qubes-nat.sh ! -name qubes-fix-nm-conf.sh)
[ -z "$others" ] || fail "besides ours, something of the Qubes scripts is where it runs: $others"
fakes_still_there() {
    for p in $FAKES; do installed "$p" || fail "$p is no longer installed ($1)"; done
}
fakes_still_there "after the install"

step "an application, not a library: the modules are in /usr/share/$PKG only, byte-compiled"
for dir in $(/usr/bin/python3 -I -c 'import site, sys; print(" ".join(site.getsitepackages() + [p for p in sys.path if p]))') \
    /usr/lib/python3/dist-packages /usr/local/lib/python3*/dist-packages; do
    for module in qubesnet vif_route_qubes setup_dnat_to_ns; do
        if [ -e "$dir/$module" ] || [ -e "$dir/$module.py" ]; then fail "$dir/$module: a top-level module of ours"; fi
    done
done
if /usr/bin/python3 -I -c 'import qubesnet' 2>/dev/null; then fail "the system's python3 imports qubesnet"; fi
for module in qubesnet vif_route_qubes setup_dnat_to_ns; do
    ls "/usr/share/$PKG/$module/__pycache__/"*.cpython-*.pyc >/dev/null 2>&1 || fail "$module has no byte code (py3compile)"
done
/etc/xen/scripts/vif-route-qubes --help | head -n 1
/usr/lib/qubes/qubes-setup-dnat-to-ns --help | head -n 1
man -w vif-route-qubes qubes-setup-dnat-to-ns

step "units: watch and reconcile enabled, the DNS watch not; systemd-analyze verify"
UNITS=$(dpkg -L $PKG | grep -E '/systemd/system/[^/]+\.service$')
# 0.1.0 had them in /usr/lib/systemd/system, Debian 12's systemd.pc says
# /lib/systemd/system: the same directory on a merged /usr, where dpkg must
# not take the new file for the old one it removes.
for unit in $UNITS; do [ -f "$unit" ] || fail "$unit is missing after the upgrade"; done
for unit in qubes-vif-watch.service qubes-vif-reconcile.service; do
    [ -L "/etc/systemd/system/multi-user.target.wants/$unit" ] || fail "$unit is not enabled"
done
[ ! -e /etc/systemd/system/multi-user.target.wants/qubes-setup-dnat-to-ns-watch.service ] ||
    fail "qubes-setup-dnat-to-ns-watch.service is enabled: the dispatcher hook follows the uplinks already"
for unit in $UNITS; do
    grep -qx 'ConditionPathExists=/run/qubes-service/qubes-network' "$unit" || fail "$unit runs outside a netvm"
done
# --man=no: it would format the pages of Documentation= with man, leaving
# man-db's cache of them behind; man -w above checks that they exist.
# shellcheck disable=SC2086
systemd-analyze verify --man=no $UNITS > "$WORK/verify.out" 2>&1 || { cat "$WORK/verify.out"; fail "systemd-analyze verify"; }
cat "$WORK/verify.out"
! grep -q . "$WORK/verify.out" || fail "systemd-analyze verify has something to say about our units"
echo "systemd-analyze verify: clean ($(echo "$UNITS" | wc -l) units)"

# --- 4. the installed programs at work, the originals idle -----------------------------

step "integration tier against the installed entry points"
export QUBES_NETSIM_BIN="$BIN" QUBES_REQUIRE_NETNS=1
chosen=$("$VPY" -c 'from qubes_netsim.topology import bin_path; print(bin_path("vif-route-qubes"), bin_path("qubes-setup-dnat-to-ns"))')
[ "$chosen" = "$BIN/vif-route-qubes $BIN/qubes-setup-dnat-to-ns" ] || fail "the simulator would run $chosen"
# shellcheck disable=SC2086
(cd "$REPO" && "$VPY" -m pytest -p no:cacheprovider ${PYTEST_ARGS:-tests/integration})
unset QUBES_NETSIM_BIN
[ "$(originals_ran)" -eq 0 ] || { cat "$RUNLOG"; fail "an original ran during the integration tier"; }

step "a real NetworkManager with the system's dispatcher.d: ours on each action, the original never"
dispatcher_check || { cat "$WORK/dispatcher.out"; fail "installed_dispatcher.py"; }
grep -E '^(dispatched|ours ran for):|passed' "$WORK/dispatcher.out"
[ "$(originals_ran)" -eq 0 ] || { cat "$RUNLOG"; fail "an original ran"; }
echo "the originals ran 0 times"

# --- 5. an upgrade of the originals' package ---------------------------------------

step "upgrade of qubes-core-agent-networking: it must not overwrite ours"
apt_install -y -qq "$NET2" >/dev/null
dpkg-query -W qubes-core-agent-networking
for path in $PATHS; do
    case "$(readlink -f "$path")" in /usr/lib/$PKG/*) ;; *) fail "the upgrade replaced $path" ;; esac
    [ ! -e "$path.qubes-orig" ] || fail "the upgrade's file went to $path.qubes-orig"
done
grep -q "4.99.1-1" "$ORIGINALS/vif-route-qubes" || fail "the upgrade's file is not in $ORIGINALS"
grep -q "4.99.1-1" "$ORIGINALS/qubes-setup-dnat-to-ns" || fail "the upgrade's file is not in $ORIGINALS"
fakes_still_there "after the upgrade"
NEW_STATE=$(state_of "$ORIGINALS")
[ "$NEW_STATE" != "$ORIG_STATE" ] || fail "the upgrade changed nothing in $ORIGINALS"

# --- 6. purge -------------------------------------------------------------------------

step "apt-get purge $PKG: the originals come back"
apt-get purge -y $PKG
! installed $PKG || fail "$PKG still installed"
[ "$(our_diversions)" -eq 0 ] || fail "diversions of $PKG left"
for path in $PATHS; do
    if [ ! -f "$path" ] || [ -L "$path" ]; then fail "$path is not the original file again"; fi
    [ ! -e "$path.qubes-orig" ] || fail "$path.qubes-orig left behind"
done
[ "$(state_of "")" = "$NEW_STATE" ] || fail "the originals are not back byte for byte with their modes: $(state_of "")"
fakes_still_there "after the purge"
# shellcheck disable=SC2086
dpkg-query -S $PATHS
names_of_ours > "$WORK/names-after"
if ! diff -u "$WORK/names-before" "$WORK/names-after"; then fail "the listing of / differs from before the install"; fi
for dir in /usr/lib/$PKG /usr/share/$PKG; do [ ! -e "$dir" ] || fail "$dir left behind"; done
echo "originals back byte for byte; the listing of / names nothing of $PKG ($(wc -l < "$WORK/names-after") paths, all the stand-ins')"
cat "$WORK/names-after"

step "PASSED"
