"""Both packages build from the tree, with the layout, dependencies and takeover intended.

`make deb` (dpkg-buildpackage, then lintian, which fails the target on any
error) and `make rpm` (rpmbuild -bb --nodeps) run into a temporary
directory; their file lists, dependencies and scripts are read back with
dpkg-deb and rpm -qp. The RPM scriptlets that take the Qubes paths over are
run in a scratch directory standing in for /. Installing the .deb for real
is tests/package/roundtrip.sh (make package-test).
"""

from __future__ import annotations

import configparser
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PKG = "qubes-netvm-hotplug"
QUBES_PATHS = (
    "/etc/xen/scripts/vif-route-qubes",
    "/usr/lib/qubes/qubes-setup-dnat-to-ns",
    "/etc/NetworkManager/dispatcher.d/qubes-nmhook",
)
PROGRAMS = ("vif-route-qubes", "qubes-setup-dnat-to-ns", "qubes-nmhook")
RUNTIME_PACKAGES = ("qubesnet", "vif_route_qubes", "setup_dnat_to_ns")
UNIT_DIR = "/usr/lib/systemd/system"
DROPIN_DIRS = tuple(f"{UNIT_DIR}/{u}.service.d" for u in ("qubes-antispoof", "qubes-iptables", "nftables"))
UNITS = (f"{UNIT_DIR}/qubes-setup-dnat-to-ns-watch.service", f"{UNIT_DIR}/qubes-vif-reconcile.service",
         f"{UNIT_DIR}/qubes-vif-watch.service", *(f"{d}/50-qubes-vif-reconcile.conf" for d in DROPIN_DIRS))
DEPENDENCIES = ("python3-pyroute2", "python3-nftables", "python3-jeepney")
# The Debian package's private module directory, and where its originals go.
PRIVATE_DIR = f"/usr/share/{PKG}"
ORIGINALS = f"/usr/lib/{PKG}/originals"


def version() -> str:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    return config["metadata"]["version"]


def run(*argv: str, cwd: Path = REPO) -> str:
    result = subprocess.run(argv, cwd=cwd, check=False, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(argv)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def source_modules() -> set[str]:
    """package/module.py paths of the runtime packages, as in the tree."""
    return {str(p.relative_to(REPO)) for pkg in RUNTIME_PACKAGES for p in (REPO / pkg).rglob("*.py")}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("packages")
    run("make", "--no-print-directory", f"PKG_BUILD={out}", "deb", "rpm")
    yield out


def test_versions_agree() -> None:
    changelog = run("dpkg-parsechangelog", "-S", "Version")
    spec = (REPO / "rpm" / f"{PKG}.spec").read_text()
    spec_version = re.search(r"^Version:\s*(\S+)$", spec, flags=re.MULTILINE)
    assert spec_version
    assert changelog.strip() == spec_version.group(1) == version()


# --- the .deb ----------------------------------------------------------------


def deb(built: Path) -> Path:
    return built / f"{PKG}_{version()}_all.deb"


def test_deb_depends_on_the_distributions_libraries(built: Path) -> None:
    depends = run("dpkg-deb", "-f", str(deb(built)), "Depends")
    assert "python3-pyroute2 (>= 0.7.2)" in depends
    for name in DEPENDENCIES:
        assert re.search(rf"(^|, ){re.escape(name)}( |,|$)", depends.strip()), name
    assert run("dpkg-deb", "-f", str(deb(built)), "Architecture").strip() == "all"


def deb_unit_dir() -> str:
    """Where this release's systemd.pc puts units (Debian 12: /lib/systemd/system)."""
    return run("pkg-config", "--variable=systemdsystemunitdir", "systemd").strip()


def test_deb_installs_what_make_install_does(built: Path) -> None:
    listing = run("dpkg-deb", "-c", str(deb(built)))
    entries = {}
    for line in listing.splitlines():
        fields = line.split(None, 5)
        name = fields[5].removeprefix(".").split(" -> ")[0].rstrip("/")
        entries[name] = (fields[0], fields[5].split(" -> ")[1] if " -> " in fields[5] else None)
    # An application's private modules, not a library: nothing in any
    # site-packages; byte code is py3compile's, at install time.
    site = PRIVATE_DIR
    assert {n.removeprefix(site + "/") for n in entries if n.startswith(site) and n.endswith(".py")} == source_modules()
    assert not [n for n in entries if "/python3/dist-packages" in n or "site-packages" in n]
    assert not [n for n in entries if "qubes_netsim" in n or "/tests/" in n or n.endswith(".pyc")]
    assert not [n for n in entries if n.startswith(ORIGINALS)], "originals/ is made and removed by the scripts"
    for program in PROGRAMS:
        assert entries[f"/usr/lib/{PKG}/{program}"][0] == "-rwxr-xr-x", program
    for path, program in zip(QUBES_PATHS, PROGRAMS, strict=True):
        mode, target = entries[path]
        assert mode.startswith("l") and target and target.endswith(f"{PKG}/{program}"), path
    units = tuple(name.replace(UNIT_DIR, deb_unit_dir(), 1) for name in UNITS)
    for name in ("/usr/lib/udev/rules.d/90-qubes-vif-route.rules", *units,
                 "/usr/share/man/man8/vif-route-qubes.8.gz", "/usr/share/man/man8/qubes-setup-dnat-to-ns.8.gz"):
        assert entries[name][0] == "-rw-r--r--", name


def control_files(built: Path, tmp_path: Path) -> dict[str, str]:
    run("dpkg-deb", "-e", str(deb(built)), str(tmp_path / "control"))
    return {p.name: p.read_text() for p in (tmp_path / "control").iterdir()}


def test_deb_diverts_the_qubes_paths_where_nothing_runs_them(built: Path, tmp_path: Path) -> None:
    scripts = control_files(built, tmp_path)
    preinst, postrm = scripts["preinst"], scripts["postrm"]
    for path in QUBES_PATHS:
        for name in ("divert", "migrate_from_next_to_the_path"):
            assert re.search(rf"^\s+{name} {re.escape(path)}$", preinst, flags=re.MULTILINE), (name, path)
        for name in ("undivert", "migrate_back_next_to_the_path"):
            assert re.search(rf"^\s+{name} {re.escape(path)}$", postrm, flags=re.MULTILINE), (name, path)
    for script in (preinst, postrm):
        assert f"ORIGINALS={ORIGINALS}\n" in script
        assert '--divert "$ORIGINALS/${1##*/}" "$1"' in script
        assert ".qubes-orig\" --add" not in script and "--rename --divert \"$1.qubes-orig" not in script
    assert '--package "$PKG" --add --rename' in preinst
    assert '--package "$PKG" --remove --rename' in postrm
    assert "dpkg --compare-versions \"$2\" lt 0.2.0~" in preinst
    assert "conffiles" not in scripts, "nothing of ours is a conffile"


def test_deb_byte_compiles_its_private_directory(built: Path, tmp_path: Path) -> None:
    scripts = control_files(built, tmp_path)
    assert f"py3compile -p {PKG} {PRIVATE_DIR}" in scripts["postinst"]
    assert f"py3clean -p {PKG}" in scripts["prerm"]


def test_deb_enables_the_watch_and_reconcile_units_only(built: Path, tmp_path: Path) -> None:
    postinst = control_files(built, tmp_path)["postinst"]
    # dh_installsystemd's blocks: an enable on first install, or only when the
    # administrator had enabled the unit (debian-installed; --no-enable).
    enabled: set[str] = set()
    if_enabled_before: set[str] = set()
    for block in postinst.split("# Automatically added by dh_installsystemd")[1:]:
        units = set(re.findall(r"deb-systemd-helper enable '([^']+)'", block))
        (if_enabled_before if "debian-installed" in block else enabled).update(units)
    assert enabled == {"qubes-vif-watch.service", "qubes-vif-reconcile.service"}
    assert if_enabled_before == {"qubes-setup-dnat-to-ns-watch.service"}
    started = set(re.findall(r"deb-systemd-invoke \$_dh_action '([^']+)'", postinst))
    assert started == {"qubes-vif-watch.service"}


def test_units_do_nothing_outside_a_netvm() -> None:
    for unit in ("qubes-vif-watch.service", "qubes-vif-reconcile.service", "qubes-setup-dnat-to-ns-watch.service"):
        text = (REPO / "systemd" / unit).read_text()
        assert "\nConditionPathExists=/run/qubes-service/qubes-network\n" in text, unit
        assert "\n[Install]\nWantedBy=multi-user.target\n" in text, unit


# --- the RPM -------------------------------------------------------------------
# What the RPM holds, read back from it. Its scriptlets are run by rpm itself
# over stand-in Qubes packages in a scratch root: tests/package/rpm_roundtrip.sh
# (make rpm-test).

RPM_PRIVATE_DIR = f"/usr/share/{PKG}"
RPM_UNIT_DIR = "/usr/lib/systemd/system"
RPM_DROPIN_DIRS = tuple(f"{RPM_UNIT_DIR}/{u}.service.d" for u in ("qubes-antispoof", "qubes-iptables", "nftables"))
RPM_UNITS = (f"{RPM_UNIT_DIR}/qubes-setup-dnat-to-ns-watch.service", f"{RPM_UNIT_DIR}/qubes-vif-reconcile.service",
             f"{RPM_UNIT_DIR}/qubes-vif-watch.service", *(f"{d}/50-qubes-vif-reconcile.conf" for d in RPM_DROPIN_DIRS))
RPM_PRESET = f"/usr/lib/systemd/system-preset/75-{PKG}.preset"


def rpm(built: Path) -> Path:
    return built / f"{PKG}-{version()}-1.noarch.rpm"


def test_rpm_file_list(built: Path) -> None:
    files = set(run("rpm", "-qlp", str(rpm(built))).split())
    private = RPM_PRIVATE_DIR + "/"
    assert {f.removeprefix(private) for f in files if f.startswith(private) and f.endswith(".py")} == source_modules()
    for module in source_modules():  # %py_byte_compile: optimisation levels 0 and 1, as Fedora ships them
        pkg, _, name = module.rpartition("/")
        for level in ("", ".opt-1"):
            pattern = rf"{re.escape(private + pkg)}/__pycache__/{name[:-3]}\.cpython-\d+{re.escape(level)}\.pyc"
            assert any(re.fullmatch(pattern, f) for f in files), (module, level)
    assert not [f for f in files if "-packages" in f], "an application's modules, not a library's"
    licenses = {f for f in files if f.startswith("/usr/share/licenses/")}
    assert {f.rpartition("/")[2] for f in licenses} >= {"COPYING"}
    others = {f for f in files if not f.startswith((RPM_PRIVATE_DIR, "/usr/share/licenses/"))}
    assert others == {
        f"/usr/lib/{PKG}", f"/usr/lib/{PKG}/originals", *(f"/usr/lib/{PKG}/{p}" for p in PROGRAMS),
        "/usr/lib/udev/rules.d/90-qubes-vif-route.rules", *RPM_UNITS, *RPM_DROPIN_DIRS, RPM_PRESET,
        "/usr/share/man/man8/vif-route-qubes.8", "/usr/share/man/man8/qubes-setup-dnat-to-ns.8",
    }
    assert not set(QUBES_PATHS) & files, "the Qubes paths belong to the Qubes packages"


def test_rpm_requires_the_distributions_libraries(built: Path) -> None:
    requires = set(run("rpm", "-qp", "--requires", str(rpm(built))).splitlines())
    assert {"python3-pyroute2 >= 0.7.2", "python3-nftables", "python3-jeepney"} <= requires
    # The byte code is the interpreter's: private modules get no automatic python(abi).
    assert [r for r in requires if re.fullmatch(r"python\(abi\) = 3\.\d+", r)], requires


def test_rpm_preset_enables_the_watch_and_reconcile_units() -> None:
    """As the Debian package does (dh_installsystemd); the round trip checks that rpm enables them."""
    preset = (REPO / "rpm" / RPM_PRESET.rpartition("/")[2]).read_text()
    lines = [line for line in preset.splitlines() if line and not line.startswith("#")]
    assert lines == ["enable qubes-vif-watch.service", "enable qubes-vif-reconcile.service"]


def test_rpm_scriptlets_move_originals_where_nothing_runs_them(built: Path) -> None:
    text = run("rpm", "-qp", "--scripts", "--triggers", str(rpm(built)))
    headers = set(re.findall(r"^(\w+) scriptlet \(using /bin/sh\)", text, flags=re.MULTILINE))
    assert {"posttrans", "preuninstall", "triggerin", "triggerun"} <= headers
    assert f"orig=/usr/lib/{PKG}/originals/" in text
    # .qubes-orig (0.1.0's place, next to the live name) is only ever a source.
    assert not re.search(r"mv -f \S+ \S*qubes-orig", text)
