"""qubes-setup-dnat-to-ns: point the virtual DNS addresses at real servers."""
