"""Shared pieces of the Qubes network-VM hotplug entry points.

Nothing is imported here on purpose: every entry point runs on the critical
path of a VM start, so each module imports only what its own path needs.
"""
