#!/bin/sh
# Install the Debian packages this project needs to build, run and test.
# Run as root on Debian 12 (bookworm) or later. python3-pyroute2 and
# python3-jeepney: the distribution's libraries that make test-debian-pyroute2
# and the packages use; debhelper ... rpm: to build and check the packages.
set -eu

PACKAGES="make python3 python3-venv
nftables libnftables1 python3-nftables
iproute2 iputils-ping conntrack util-linux procps
xenstore-utils dnsmasq-base dnsutils dbus-daemon
time hyperfine gcc libc6-dev python3-dbus
python3-pyroute2 python3-jeepney
debhelper dh-python dpkg-dev fakeroot lintian rpm man-db"

if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap.sh: run as root (apt-get installs system packages)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null
echo "bootstrap.sh: system packages installed"
