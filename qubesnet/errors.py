"""The narrow exceptions every entry point maps to a recovery path.

Each error's message is one line meant for an administrator: what is wrong
and, where it helps, what to do about it.
"""


class QubesNetError(Exception):
    """Base class: anything an entry point reports and exits 1 for."""

    def __str__(self) -> str:
        # Messages travel into XenStore (hotplug-error) and syslog: keep them
        # on one line whatever the underlying text contained.
        return " ".join(super().__str__().split())


class ConfigError(QubesNetError):
    """Bad input from XenStore, QubesDB, the environment or a file.

    ``key`` names the offending input, so the message can point at it.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


class StoreError(QubesNetError):
    """A store daemon (XenStore, QubesDB) is unreachable, silent or broken."""


class ApplyError(QubesNetError):
    """The kernel refused a change (netlink or nftables)."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        # e.g. the nftables JSON that was rejected; logged at debug level
        self.detail = detail
