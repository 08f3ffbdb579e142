"""Network hooks and the optional flowtable: extras that never break a hotplug."""

from __future__ import annotations

import os
import stat

from qubes_netsim.topology import UPSTREAM, SimNetvm


def _hook(sim: SimNetvm, name: str, body: str) -> str:
    path = os.path.join(sim.hooks_dir, name)
    with open(path, "w") as handle:
        handle.write("#!/bin/sh\n" + body + "\n")
    os.chmod(path, stat.S_IRWXU)
    return path


def test_hooks_run_once_per_address_with_the_documented_arguments(sim: SimNetvm) -> None:
    log = os.path.join(sim.workdir, "hooks.log")
    _hook(sim, "10-record", f'echo "$(basename $0) $*" >> {log}')
    _hook(sim, "20-record", f'echo "$(basename $0) $*" >> {log}')
    not_executable = os.path.join(sim.hooks_dir, "30-ignored")
    with open(not_executable, "w") as handle:
        handle.write(f"#!/bin/sh\necho ignored >> {log}\n")
    client = sim.add_client(12, "10.137.0.12", "fd09:24ef:4179::a89:12")

    assert sim.vif_route("online", client).returncode == 0
    assert sim.vif_route("offline", client).returncode == 0

    with open(log) as handle:
        lines = handle.read().splitlines()
    assert lines == [
        "10-record online vif12.0 vif 10.137.0.12",
        "20-record online vif12.0 vif 10.137.0.12",
        "10-record online vif12.0 vif fd09:24ef:4179::a89:12",
        "20-record online vif12.0 vif fd09:24ef:4179::a89:12",
        "10-record offline vif12.0 vif 10.137.0.12",
        "20-record offline vif12.0 vif 10.137.0.12",
        "10-record offline vif12.0 vif fd09:24ef:4179::a89:12",
        "20-record offline vif12.0 vif fd09:24ef:4179::a89:12",
    ]


def test_hooks_without_address(sim: SimNetvm) -> None:
    log = os.path.join(sim.workdir, "hooks.log")
    _hook(sim, "record", f'echo "$# $*" >> {log}')
    client = sim.add_client(12, None)
    sim.write_backend(client, ip="")

    assert sim.vif_route("online", client).returncode == 0

    with open(log) as handle:
        assert handle.read().splitlines() == ["3 online vif12.0 vif"]


def test_a_failing_hook_is_logged_and_not_fatal(sim: SimNetvm) -> None:
    _hook(sim, "broken", "echo 'something went wrong' >&2; exit 3")
    client = sim.add_client(12, "10.137.0.12")

    result = sim.vif_route("online", client)

    assert result.returncode == 0
    assert "network hook" in result.stderr and "status 3" in result.stderr
    assert sim.hotplug_status(client) == "connected"
    assert client.ping(UPSTREAM)


def test_flowtable_unsupported_kernel_gives_one_warning_and_works(sim: SimNetvm) -> None:
    """These kernels lack CONFIG_NF_FLOW_TABLE: acceleration is skipped."""
    probe = sim.netvm.run(
        ["nft", "add table inet probe; add flowtable inet probe f { hook ingress priority 0; devices = { lo }; }"],
        check=False,
    )
    sim.netvm.run(["nft", "delete", "table", "inet", "probe"], check=False)
    sim.qubesdb.write("/qubes-service/network-flowtable", "1")
    client = sim.add_client(12, "10.137.0.12")

    result = sim.vif_route("online", client)

    assert result.returncode == 0, result.stderr
    if probe.returncode != 0:
        assert result.stderr.count("flowtable acceleration skipped") == 1
        assert not sim.netvm.nft_json("list", "table", "inet", "qubes-flowtable", allow_missing=True)
    else:  # a kernel with flowtables: the vif is in it
        flowtables = sim.netvm.nft_json("list", "flowtables")
        assert any("vif12.0" in str(f) for f in flowtables)
    assert sim.set_elements("ip", "allowed") == {("vif12.0", "10.137.0.12")}
    assert client.ping(UPSTREAM)
    assert sim.vif_route("offline", client).returncode == 0
