"""The exit statuses of qubes-setup-dnat-to-ns, defined once (--help and the
dispatcher hook rely on them: only APPLIED restarts the updates proxy)."""

from enum import IntEnum


class ExitCode(IntEnum):
    APPLIED = 0  # the chains were changed
    ERROR = 1  # one line on stderr and in syslog; the old chains are kept
    USAGE = 2  # bad command line
    UNCHANGED = 100  # both families' chains already were the ones computed
