#!/bin/bash
# The benchmark's reference: the same kernel changes as vif-route-qubes,
# done the way the shell originals do them, one command per step
# (xenstore-read, qubesdb-read, sysctl, conntrack, nft, ip, xenstore-write).
# Not a product: only for `make bench` to compare against.
set -e
command=$1
: "${vif:?}" "${XENBUS_PATH:?}"
domid=${vif#vif}; domid=${domid%%.*}
metric=$((32752 - domid))

ip=$(xenstore-read "$XENBUS_PATH/ip")
for addr in $ip; do
    case $addr in
        *:*) [ -z "$ip6" ] && ip6=$addr ;;
        *) [ -z "$ip4" ] && ip4=$addr ;;
    esac
done
gw=$(qubesdb-read /qubes-netvm-gateway)
gw6=$(qubesdb-read /qubes-netvm-gateway6 || :)

purge() {
    conntrack -D -s "$1" >/dev/null 2>&1 || :
    conntrack -D -d "$1" >/dev/null 2>&1 || :
}

case $command in
online)
    mac=$(xenstore-read "$XENBUS_PATH/mac")
    sysctl -q -w "net/ipv4/conf/$vif/proxy_arp=1"
    for addr in $ip4 $ip6; do purge "$addr"; done
    nft add element ip qubes allowed "{ \"$vif\" . $ip4 }"
    nft add element ip qubes downstream "{ $ip4 }"
    if [ -n "$ip6" ]; then
        nft add element ip6 qubes allowed "{ \"$vif\" . $ip6 }"
        nft add element ip6 qubes downstream "{ $ip6 }"
    fi
    ip link set "$vif" group 2 up
    ip route add "$ip4" dev "$vif" metric "$metric"
    ip neigh add "$ip4" lladdr "$mac" dev "$vif" nud permanent
    if [ -n "$ip6" ]; then
        ip -6 route add "$ip6" dev "$vif" metric "$metric"
        ip -6 neigh add "$ip6" lladdr "$mac" dev "$vif" nud permanent
    fi
    ip addr add "$gw/32" dev "$vif"
    if [ -n "$gw6" ]; then
        ip addr add "$gw6/128" dev "$vif" nodad
        sysctl -q -w "net/ipv6/conf/$vif/proxy_ndp=1"
    fi
    xenstore-write "$XENBUS_PATH/hotplug-status" connected
    ;;
offline)
    ip link set "$vif" down || :
    ip route del "$ip4" dev "$vif" metric "$metric" || :
    ip neigh del "$ip4" dev "$vif" || :
    nft delete element ip qubes allowed "{ \"$vif\" . $ip4 }" || :
    nft delete element ip qubes downstream "{ $ip4 }" || :
    if [ -n "$ip6" ]; then
        ip -6 route del "$ip6" dev "$vif" metric "$metric" || :
        ip -6 neigh del "$ip6" dev "$vif" || :
        nft delete element ip6 qubes allowed "{ \"$vif\" . $ip6 }" || :
        nft delete element ip6 qubes downstream "{ $ip6 }" || :
    fi
    ip addr del "$gw/32" dev "$vif" || :
    [ -n "$gw6" ] && { ip addr del "$gw6/128" dev "$vif" || :; }
    for addr in $ip4 $ip6; do purge "$addr"; done
    ;;
esac
