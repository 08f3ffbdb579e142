#!/bin/sh
# Install the Debian packages this project needs to build, run and test.
# Run as root on Debian 12 (bookworm) or later. python3-pyroute2 and
# python3-jeepney: the distribution's libraries that make test-debian-pyroute2
# and the packages use; debhelper ... rpm: to build and check the packages.
# busybox-static and systemd's systemctl: the shell, tools and systemctl of
# the scratch root where rpm runs the RPM's scriptlets (make rpm-test).
set -eu

PACKAGES="make python3 python3-venv
nftables libnftables1 python3-nftables
iproute2 iputils-ping conntrack util-linux procps
xenstore-utils dnsmasq-base dnsutils dbus-daemon busybox-static systemd
time hyperfine gcc libc6-dev python3-dbus
network-manager
python3-pyroute2 python3-jeepney
debhelper dh-python dpkg-dev fakeroot lintian rpm man-db pkgconf"

if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap.sh: run as root (apt-get installs system packages)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# network-manager is only for the tests, which run their own NetworkManager
# in private namespaces (tests/integration/test_dnat_networkmanager.py): on a
# machine booted with systemd, it must not start managing the host's
# interfaces when installed, so its units are masked first.
if [ -d /run/systemd/system ] && ! dpkg -s network-manager >/dev/null 2>&1; then
    systemctl mask NetworkManager.service NetworkManager-wait-online.service >/dev/null 2>&1 || :
fi
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null
echo "bootstrap.sh: system packages installed"
