"""Netlink access (rtnetlink, ctnetlink) for the hotplug entry points.

Message encoding and decoding come from pyroute2's message classes; the
socket handling is ours and small, so that an entry point pays for nothing
but the few message modules it uses (see _pyroute2.py).
"""
