#!/bin/sh
# The RPM's scriptlets run by rpm itself (make rpm-test; root, Debian's rpm).
#
#   sh tests/package/rpm_roundtrip.sh PKG_BUILD
#
# PKG_BUILD is where `make rpm` left qubes-netvm-hotplug-VERSION-1.noarch.rpm
# and its source tarball (src/). In a scratch root under build/ (rpm --root:
# rpm chroots into it for every scriptlet, so the root gets a static busybox
# as /bin/sh and its tools, and the host's systemctl with its libraries, so
# that %systemd_post's preset really enables units there), this script
# builds stand-in qubes-core-agent-networking and
# qubes-core-agent-network-manager RPMs (two versions each, files told apart
# by content) and a package that provides what Fedora would (python3 and its
# libraries: no --nodeps anywhere), then drives rpm as an administrator
# would:
#   stand-ins installed, ours installed, the stand-ins upgraded (the trigger
#   moves their NEW file aside), ours upgraded, ours erased (the newest
#   originals back byte for byte: rpm -V of the stand-ins is clean),
#   ours again, the stand-ins erased before ours (network-manager first),
#   ours erased: the root as before, by listing;
#   then our 0.1.0 (built from this repository's history) over the
#   stand-ins, upgraded to this version: its <path>.qubes-orig files move
#   into originals/, its site-packages modules go; last, the stand-ins and
#   ours installed in one transaction, then erased in one.
# At every step where ours is installed: each Qubes path is a symlink to
# ours, no original is anywhere a program scans (dispatcher.d holds nothing
# but our hook; no *.qubes-orig, *.rpmnew), rpm -V qubes-netvm-hotplug is
# clean, the preset units are enabled. The root is removed on success and
# kept for a look on failure.
#
# shellcheck disable=SC2015,SC2086
# (A && B || fail: fail when either is false, as meant; the path lists are
# split on purpose.)
set -eu

if [ $# -ne 1 ]; then
    echo "usage: $0 PKG_BUILD (the directory make rpm wrote)" >&2
    exit 2
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "rpm_roundtrip: run as root (rpm --root chroots into the scratch root)" >&2
    exit 2
fi
for tool in rpm rpmbuild busybox systemctl git; do
    command -v "$tool" >/dev/null || { echo "rpm_roundtrip: $tool missing: run scripts/bootstrap.sh" >&2; exit 2; }
done

REPO=$(cd "$(dirname "$0")/../.." && pwd)
PKG_BUILD=$(cd "$1" && pwd)
NAME=qubes-netvm-hotplug
VERSION=$(sed -n 's/^version = //p' "$REPO/setup.cfg")
OURS_1="$PKG_BUILD/$NAME-$VERSION-1.noarch.rpm"
[ -f "$OURS_1" ] || { echo "rpm_roundtrip: $OURS_1 missing: run make rpm first" >&2; exit 2; }
WORK="$REPO/build/rpm-roundtrip"
ROOT="$WORK/root"
LIBDIR=/usr/lib/$NAME
ORIGDIR=$LIBDIR/originals
NM_DIR=/etc/NetworkManager/dispatcher.d
NETWORKING_PATHS="/etc/xen/scripts/vif-route-qubes /usr/lib/qubes/qubes-setup-dnat-to-ns"
NM_PATHS="$NM_DIR/qubes-nmhook"
BASE_DIRS="/usr/share /usr/share/licenses /usr/share/man /usr/share/man/man8 /usr/lib/systemd
/usr/lib/systemd/system /usr/lib/systemd/system-preset /usr/lib/udev /usr/lib/udev/rules.d /etc/systemd
/etc/systemd/system /etc/systemd/system/multi-user.target.wants"
ENABLED_UNITS="qubes-vif-watch.service qubes-vif-reconcile.service"
DNS_WATCH_LINK=/etc/systemd/system/multi-user.target.wants/qubes-setup-dnat-to-ns-watch.service
STARTED=$(date +%s)
PASSED=0

# --- reporting -----------------------------------------------------------------

fail() {
    echo "rpm_roundtrip: FAILED: $*" >&2
    echo "rpm_roundtrip: the scratch root is kept in $ROOT" >&2
    echo "rpm-roundtrip: $PASSED passed, 1 failed"
    exit 1
}
passed() {
    PASSED=$((PASSED + 1))
    echo "ok $PASSED - $*"
}
run() {  # a command that must succeed; its output is shown only on failure
    out=$("$@" 2>&1) || fail "$* exited $?: $out"
}
R() { rpm --root "$ROOT" --dbpath /var/lib/rpm "$@"; }

# --- building the packages -----------------------------------------------------

build_rpm() {  # spec sourcedir [rpmbuild options...]: the built RPM's path on stdout
    spec=$1 sources=$2
    shift 2
    log="$WORK/rpmbuild.log"
    rpmbuild -bb --define "_topdir $WORK/rpmbuild" --define "_sourcedir $sources" "$@" "$spec" >"$log" 2>&1 ||
        fail "rpmbuild $spec: $(tail -20 "$log")"
    sed -n 's/^Wrote: \(.*\.rpm\)$/\1/p' "$log" | tail -1
}

# A stand-in Qubes package: name version kind path... Each file is a shell
# script naming its package, version and path (so that every version's
# file differs), mode 0755; the expected copies stay in $WORK/expected.
# kind: plain, or config for %config(noreplace) files (rpm then writes an
# upgrade's file as <path>.rpmnew beside our symlink).
standin() {
    pkg=$1 ver=$2 kind=$3
    shift 3
    src="$WORK/standin/$pkg-$ver-$kind"
    attr=""
    [ "$kind" = plain ] || attr="%config(noreplace) "
    mkdir -p "$src"
    install_lines="" files_lines=""
    for path in "$@"; do
        mkdir -p "$WORK/expected/$ver$(dirname "$path")"
        printf '#!/bin/sh\n# qubes-stand-in original: %s %s %s\nexit 0\n' "$pkg" "$ver" "$path" \
            >"$WORK/expected/$ver$path"
        chmod 0755 "$WORK/expected/$ver$path"
        cp -p "$WORK/expected/$ver$path" "$src/${path##*/}"
        install_lines="$install_lines
install -D -m 0755 %{_sourcedir}/${path##*/} %{buildroot}$path"
        files_lines="$files_lines
$attr$path"
    done
    # The directories the package creates, as a real package owns them
    # (not those of the base system: rpm would leave them behind).
    for dir in $(for path in "$@"; do
        parent=$(dirname "$path")
        while :; do
            case $parent in /etc | /usr | /usr/lib | /usr/share | /) break ;; esac
            echo "$parent"
            parent=$(dirname "$parent")
        done
    done | sort -u); do
        files_lines="$files_lines
%dir $dir"
    done
    cat >"$src/$pkg.spec" <<EOF
Name: $pkg
Version: $ver
Release: 1
Summary: Stand-in for the Qubes package of that name (test only)
License: GPL-2.0-or-later
BuildArch: noarch
%description
Stand-in owning the paths qubes-netvm-hotplug takes over.
%install$install_lines
install -D -m 0755 %{_sourcedir}/${1##*/} %{buildroot}/usr/share/$pkg/untouched
%files$files_lines
/usr/share/$pkg
EOF
    build_rpm "$src/$pkg.spec" "$src" --define "_rpmdir $src/out"  # the two kinds have one file name
}

# What Fedora's base system provides to ours (and to our 0.1.0), with the
# directories its filesystem and systemd packages own and their presets.
provides_rpm() {
    abi=$(rpm -qp --requires "$OURS_1" | sed -n 's/^python(abi) = //p')
    [ -n "$abi" ] || fail "$OURS_1 requires no python(abi)"
    BASE_DIRS="$BASE_DIRS /usr/lib/python$abi /usr/lib/python$abi/site-packages"  # python3-libs' on Fedora
    mkdir -p "$WORK/provides"
    cat >"$WORK/provides/fedora-provides.spec" <<EOF
Name: fedora-provides-standin
Version: 1
Release: 1
Summary: Provides what Fedora's base packages would (test only)
License: GPL-2.0-or-later
BuildArch: noarch
Provides: /bin/sh
Provides: /usr/bin/python3
Provides: python(abi) = $abi
Provides: python3 = $abi
Provides: python3-pyroute2 = 0.7.2
Provides: python3-nftables = 1.0.6
Provides: python3-jeepney = 0.8.0
%description
Stand-in for the base system in a scratch root, owning the directories
that Fedora's filesystem and systemd packages own.
%install
EOF
    # Fedora's last preset: what no preset file enables is disabled.
    {
        for dir in $BASE_DIRS; do echo "mkdir -p %{buildroot}$dir"; done
        echo "echo 'disable *' >%{buildroot}/usr/lib/systemd/system-preset/99-default-disable.preset"
        echo "%files"
        for dir in $BASE_DIRS; do echo "%dir $dir"; done
        echo "/usr/lib/systemd/system-preset/99-default-disable.preset"
    } >>"$WORK/provides/fedora-provides.spec"
    build_rpm "$WORK/provides/fedora-provides.spec" "$WORK/provides"
}

# NetworkManager, as far as the hook is concerned: it owns dispatcher.d.
networkmanager_rpm() {
    mkdir -p "$WORK/networkmanager"
    cat >"$WORK/networkmanager/NetworkManager.spec" <<EOF
Name: NetworkManager
Version: 1.46.0
Release: 1
Summary: Stand-in owning the dispatcher directory (test only)
License: GPL-2.0-or-later
BuildArch: noarch
%description
Stand-in for NetworkManager in a scratch root.
%install
mkdir -p %{buildroot}$NM_DIR
%files
%dir /etc/NetworkManager
%dir $NM_DIR
EOF
    build_rpm "$WORK/networkmanager/NetworkManager.spec" "$WORK/networkmanager"
}

# Ours, one release later (0.2.0-1.1 > 0.2.0-1), from the same sources.
ours_upgrade_rpm() {
    build_rpm "$PKG_BUILD/src/$NAME-$VERSION/rpm/$NAME.spec" "$PKG_BUILD/src" --nodeps --define "dist .1"
}

# Our 0.1.0, built from the last commit whose spec says so: it kept the
# originals at <path>.qubes-orig and the modules in site-packages.
ours_010_rpm() {
    commit=$(git -C "$REPO" log --format=%H -- rpm/$NAME.spec | while read -r c; do
        if git -C "$REPO" show "$c:rpm/$NAME.spec" | grep -q '^Version: *0\.1\.0$'; then echo "$c"; break; fi
    done)
    [ -n "$commit" ] || fail "no commit with the 0.1.0 spec in this clone's history (a shallow clone? fetch the history)"
    mkdir -p "$WORK/src-0.1.0"
    git -C "$REPO" archive --format=tar.gz --prefix=$NAME-0.1.0/ -o "$WORK/src-0.1.0/$NAME-0.1.0.tar.gz" "$commit"
    git -C "$REPO" show "$commit:rpm/$NAME.spec" >"$WORK/src-0.1.0/$NAME.spec"
    build_rpm "$WORK/src-0.1.0/$NAME.spec" "$WORK/src-0.1.0" --nodeps
}

# --- the scratch root ----------------------------------------------------------

# Fedora's merged /usr; busybox for the scriptlets' shell and tools; the
# host's systemctl and the libraries it loads; /dev/null; an empty rpmdb.
make_root() {
    mkdir -p "$ROOT/usr/bin" "$ROOT/usr/lib" "$ROOT/usr/lib64" "$ROOT/usr/sbin" "$ROOT/dev" "$ROOT/etc" \
        "$ROOT/tmp" "$ROOT/var/tmp"
    for dir in bin lib lib64 sbin; do ln -s usr/$dir "$ROOT/$dir"; done
    cp "$(command -v busybox)" "$ROOT/usr/bin/busybox"
    for applet in sh mv ln rm rmdir mkdir readlink cat cp chmod; do ln -s busybox "$ROOT/usr/bin/$applet"; done
    cp "$(command -v systemctl)" "$ROOT/usr/bin/systemctl"
    for lib in $(ldd "$(command -v systemctl)" | grep -o '/[^ ]*'); do
        mkdir -p "$ROOT$(dirname "$lib")"
        cp -L "$lib" "$ROOT$lib"
    done
    mknod -m 0666 "$ROOT/dev/null" c 1 3
    run R --initdb
}

listing() {  # every path in the root but rpm's database, one a line
    (cd "$ROOT" && find . -path ./var/lib/rpm -prune -o -print | sort)
}

# --- what must hold ------------------------------------------------------------

# Each Qubes path of an installed stand-in is a symlink to our program, its
# original (of version $1) in originals/ byte for byte with its mode.
assert_taken_over() {
    ver=$1
    shift
    for path in "$@"; do
        base=${path##*/}
        [ -L "$ROOT$path" ] || fail "$path is not a symlink to ours: $(ls -l "$ROOT$path" 2>&1)"
        [ "$(readlink "$ROOT$path")" = "$LIBDIR/$base" ] || fail "$path points to $(readlink "$ROOT$path")"
        cmp -s "$ROOT$ORIGDIR/$base" "$WORK/expected/$ver$path" ||
            fail "$ORIGDIR/$base is not the original of version $ver"
        [ "$(stat -c %a "$ROOT$ORIGDIR/$base")" = "$(stat -c %a "$WORK/expected/$ver$path")" ] ||
            fail "$ORIGDIR/$base lost its mode"
    done
}

# No original anywhere a program scans: dispatcher.d holds our hook and
# nothing else, no *.qubes-orig/*.rpmnew/*.rpmsave anywhere, and no file
# outside originals/ is a stand-in's original.
assert_nothing_runnable() {
    if [ -d "$ROOT$NM_DIR" ]; then
        others=$(cd "$ROOT$NM_DIR" && find . -mindepth 1 ! -name qubes-nmhook)
        [ -z "$others" ] || fail "dispatcher.d holds more than our hook: $others"
    fi
    leftovers=$(cd "$ROOT" && find . \( -name '*.qubes-orig' -o -name '*.rpmnew' -o -name '*.rpmsave' \) -print)
    [ -z "$leftovers" ] || fail "originals next to the live name: $leftovers"
    found=$(cd "$ROOT" && find . -path ./var/lib/rpm -prune -o -path ".$ORIGDIR" -prune -o -type f \
        ! -name untouched -exec grep -l '^# qubes-stand-in original' {} + || true)
    [ -z "$found" ] || fail "an original outside $ORIGDIR: $found"
}

assert_verifies() {  # rpm -V of each package named: clean
    for pkg in "$@"; do
        out=$(R -V "$pkg" 2>&1) || fail "rpm -V $pkg: $out"
        [ -z "$out" ] || fail "rpm -V $pkg: $out"
    done
}

assert_units() {  # enabled|disabled: the preset units' wants symlinks
    for unit in $ENABLED_UNITS; do
        link="$ROOT/etc/systemd/system/multi-user.target.wants/$unit"
        # A unit without an [Install] section cannot be enabled by anything.
        grep -q '^WantedBy=multi-user.target$' "$REPO/systemd/$unit" || continue
        case $1 in
            enabled) [ -L "$link" ] || fail "$unit is not enabled (no $link)" ;;
            disabled) [ ! -e "$link" ] && [ ! -L "$link" ] || fail "$unit still enabled after erase" ;;
        esac
    done
}

assert_ours_live() {  # version of the originals, then what else must hold
    assert_nothing_runnable
    assert_taken_over "$1" $NETWORKING_PATHS $NM_PATHS
    assert_verifies $NAME
    assert_units enabled
    site=$(cd "$ROOT" && find . -path './usr/lib/python3*' \( -name qubesnet -o -name vif_route_qubes \
        -o -name setup_dnat_to_ns \) -print)
    [ -z "$site" ] || fail "modules of ours in site-packages: $site"
}

assert_given_back() {  # version, paths: the originals at their paths, regular files, byte for byte
    ver=$1
    shift
    for path in "$@"; do
        [ -f "$ROOT$path" ] && [ ! -L "$ROOT$path" ] || fail "$path not given back: $(ls -l "$ROOT$path" 2>&1)"
        cmp -s "$ROOT$path" "$WORK/expected/$ver$path" || fail "$path is not the original of version $ver"
        [ "$(stat -c %a "$ROOT$path")" = "$(stat -c %a "$WORK/expected/$ver$path")" ] || fail "$path lost its mode"
    done
}

assert_listing() {  # the root lists exactly as the snapshot file $1
    listing >"$WORK/now.txt"
    diff -u "$1" "$WORK/now.txt" >"$WORK/listing.diff" || fail "the root differs from before: $(cat "$WORK/listing.diff")"
}

# --- the round trip ------------------------------------------------------------

rm -rf "$WORK"
mkdir -p "$WORK"
NET=qubes-core-agent-networking
NM=qubes-core-agent-network-manager
NET_1=$(standin $NET 4.3.1 plain $NETWORKING_PATHS)
NET_2=$(standin $NET 4.3.2 plain $NETWORKING_PATHS)
NM_1=$(standin $NM 4.3.1 plain $NM_PATHS)
NM_2=$(standin $NM 4.3.2 plain $NM_PATHS)
NM_CONFIG_1=$(standin $NM 4.3.1 config $NM_PATHS)
NM_CONFIG_2=$(standin $NM 4.3.2 config $NM_PATHS)
PROVIDES=$(provides_rpm)
NETWORKMANAGER=$(networkmanager_rpm)
OURS_2=$(ours_upgrade_rpm)
OURS_010=$(ours_010_rpm)
make_root
run R -i "$PROVIDES"
# As on any Fedora system, some unit is enabled already (systemctl disable
# removes a .wants directory it leaves empty).
ln -s /usr/lib/systemd/system/sshd.service "$ROOT/etc/systemd/system/multi-user.target.wants/sshd.service"
listing >"$WORK/base.txt"
echo "# built the stand-ins, ours $VERSION-1 and -1.1, ours 0.1.0 in $(($(date +%s) - STARTED)) s"

run R -i "$NET_1" "$NM_1"
listing >"$WORK/standins.txt"
assert_given_back 4.3.1 $NETWORKING_PATHS $NM_PATHS
passed "stand-ins 4.3.1 installed at the Qubes paths"

run R -i "$OURS_1"
assert_ours_live 4.3.1
[ ! -L "$ROOT$DNS_WATCH_LINK" ] || fail "qubes-setup-dnat-to-ns-watch.service enabled on install (the administrator's choice)"
# The entry points (python3 -IS) find our modules in the private directory
# and, when the tree's entry points take the distribution's library
# directories (@PYTHON_LIBDIRS@), Fedora's site-packages.
abi=$(rpm -qp --requires "$OURS_1" | sed -n 's/^python(abi) = //p')
for program in vif-route-qubes qubes-setup-dnat-to-ns; do
    grep -q "/usr/share/$NAME" "$ROOT$LIBDIR/$program" || fail "$program does not look in /usr/share/$NAME"
    if grep -q @PYTHON_LIBDIRS@ "$REPO/bin/$program"; then
        grep -q "/usr/lib/python$abi/site-packages" "$ROOT$LIBDIR/$program" ||
            fail "$program does not look in /usr/lib/python$abi/site-packages"
    fi
done
passed "ours installed: the Qubes paths are ours, the originals in $ORIGDIR, nothing runnable left, rpm -V clean, units enabled"

run R -U "$NET_2" "$NM_2"
assert_ours_live 4.3.2
passed "stand-ins upgraded to 4.3.2: ours still live, their new files in $ORIGDIR"

run R -U "$OURS_2"
assert_ours_live 4.3.2
passed "ours upgraded to $(rpm -qp --qf '%{VERSION}-%{RELEASE}' "$OURS_2"): still live, originals kept"

run R -e $NAME
assert_given_back 4.3.2 $NETWORKING_PATHS $NM_PATHS
assert_verifies $NET $NM
assert_units disabled
assert_listing "$WORK/standins.txt"
passed "ours erased: the 4.3.2 originals back byte for byte (rpm -V of the stand-ins clean), nothing of ours left"

run R -i "$OURS_2"
assert_ours_live 4.3.2
passed "ours installed again over the 4.3.2 stand-ins"

run R -e $NM
assert_taken_over 4.3.2 $NETWORKING_PATHS
[ ! -e "$ROOT$NM_PATHS" ] && [ ! -L "$ROOT$NM_PATHS" ] || fail "$NM_PATHS left after $NM was erased"
[ ! -e "$ROOT$ORIGDIR/qubes-nmhook" ] || fail "$NM's original left in $ORIGDIR after it was erased"
assert_nothing_runnable
assert_verifies $NAME
passed "$NM erased first: its path gone with it, ours still live for $NET"

run R -e $NET
for path in $NETWORKING_PATHS; do
    [ ! -e "$ROOT$path" ] && [ ! -L "$ROOT$path" ] || fail "$path left after $NET was erased"
done
[ -z "$(ls -A "$ROOT$ORIGDIR")" ] || fail "originals left in $ORIGDIR: $(ls -A "$ROOT$ORIGDIR")"
assert_verifies $NAME
passed "$NET erased: its paths gone with it"

run R -e $NAME
assert_listing "$WORK/base.txt"
passed "ours erased last: the root lists as before the stand-ins"

# Our 0.1.0 over the stand-ins: the bug this version fixes, then the upgrade.
run R -i "$NET_1" "$NM_1"
run R -i "$OURS_010"
[ -x "$ROOT$NM_PATHS.qubes-orig" ] || fail "0.1.0 did not leave $NM_PATHS.qubes-orig (is the history right?)"
# The administrator had enabled the DNS watch: the upgrade must keep it.
run chroot "$ROOT" /usr/bin/systemctl enable qubes-setup-dnat-to-ns-watch.service
run R -U "$OURS_1"
assert_ours_live 4.3.1
[ -L "$ROOT$DNS_WATCH_LINK" ] || fail "the upgrade from 0.1.0 disabled the administrator's qubes-setup-dnat-to-ns-watch.service"
passed "0.1.0 -> $VERSION: the .qubes-orig originals moved into $ORIGDIR, the site-packages modules gone, units enabled, the DNS watch left as it was"

run R -e $NAME
assert_given_back 4.3.1 $NETWORKING_PATHS $NM_PATHS
assert_verifies $NET $NM
assert_listing "$WORK/standins.txt"
run R -e $NET $NM
assert_listing "$WORK/base.txt"
passed "erased after the migration: originals back, then the root as before"

# The hook as a %config(noreplace) file (Qubes does not mark it so; a
# packager might): rpm writes the upgrade's file as qubes-nmhook.rpmnew
# beside our symlink, which nm-dispatcher would skip, but it is the new
# original: the trigger moves it into originals/. Erased while ours is
# installed, it leaves no .rpmsave (rpm had judged the file changed: it was
# our symlink; the trigger leaves nothing at the path to keep).
# NetworkManager owns dispatcher.d here, as on Fedora: it goes last, and
# only an empty directory goes with it.
run R -i "$NETWORKMANAGER"
run R -i "$NET_1" "$NM_CONFIG_1" "$OURS_1"
assert_ours_live 4.3.1
run R -U "$NM_CONFIG_2"
assert_nothing_runnable
assert_taken_over 4.3.2 $NM_PATHS
assert_taken_over 4.3.1 $NETWORKING_PATHS
assert_verifies $NAME
out=$(R -e $NM 2>&1) || fail "rpm -e $NM: $out"
# (Debian's rpm always warns that it is not the Debian way: not that.)
out=$(echo "$out" | grep -v -e '^rpm: RPM should not be used directly' -e '^rpm: However assuming' || true)
[ -z "$out" ] || fail "rpm -e $NM had something to say (a file kept?): $out"
assert_nothing_runnable
[ ! -e "$ROOT$NM_PATHS" ] && [ ! -L "$ROOT$NM_PATHS" ] || fail "$NM_PATHS left after $NM was erased"
run R -e $NAME $NET NetworkManager
assert_listing "$WORK/base.txt"
passed "a %config(noreplace) hook: the upgrade's .rpmnew moved into originals/, no .rpmsave on erase"

# One transaction each: the Qubes packages and ours installed together (the
# takeover waits for %posttrans), then all three erased together.
run R -i "$NET_2" "$NM_2" "$OURS_2"
assert_ours_live 4.3.2
passed "stand-ins and ours installed in one transaction: ours live"
run R -e $NAME $NET $NM
assert_listing "$WORK/base.txt"
passed "stand-ins and ours erased in one transaction: the root as before"

rm -rf "$WORK"
echo "# rpm round trip: $(($(date +%s) - STARTED)) s"
echo "rpm-roundtrip: $PASSED passed, 0 failed"
