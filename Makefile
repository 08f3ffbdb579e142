# Qubes network-VM hotplug entry points.
#
#   make deps          Debian packages (root): see scripts/bootstrap.sh
#   make venv          .venv with the project and its test tools installed
#   make lint          ruff, mypy and tools/mutation.py --check (zero findings; make test runs it first)
#   make test          lint, then the whole test suite (needs root: network
#                      namespaces), on the newest pyroute2 from PyPI
#   make test-debian-pyroute2  the same suite on Debian's python3-pyroute2
#   make unit          the tests that need neither root nor namespaces
#   make coverage      the unit tier's coverage; the read side (event, observe,
#                      admin, survey) must stay at 85 % or more each
#   make demo          the main job in the simulated environment
#   make reliability   bad inputs, faults, load, soak, security at full size
#   make bench         performance figures (not a test)
#   make mutation      hand-picked mutants (vif core, DNS path, dispatcher hook,
#                      validation, locks, mapped NAT, failure reporting), each
#                      killed by the unit or the namespace tier (root; not in
#                      make test)
#   make mutation-sample  generated operator mutants of the pure DNS modules,
#                      qubesnet/validate.py and the mapped NAT table on the unit
#                      tier (cosmic-ray; minutes; not in make test);
#                      docs/testing.md explains the survivors
#   make install DESTDIR=... PREFIX=/usr
#   make deb           the Debian package, checked by lintian (build/packages/)
#   make rpm           the RPM package (build/packages/)
#   make rpm-test      the RPM's scriptlets run by rpm over stand-in Qubes packages
#                      in a scratch root under build/ (root; tests/package/rpm_roundtrip.sh)
#   make package-test  install the .deb for real, run the namespace tier on
#                      it, purge it (root; changes the system: not in make test)
#   make test-debian13 the .deb built, installed and tested on Debian 13
#                      (trixie) in an mmdebstrap root (root; downloads trixie)

PYTHON ?= /usr/bin/python3
VENV ?= .venv
VPY = $(VENV)/bin/python

# Install layout (Debian paths; override on the command line).
DESTDIR ?=
PREFIX ?= /usr
SYSCONFDIR ?= /etc
# The modules are the programs' private ones, not a library: a directory of
# the package's own (Debian's Python policy for programs; Fedora allows
# %{_datadir}/%{name} too), never top-level names in site-packages. The
# entry points get it substituted for @PYTHONDIR@.
PYTHONDIR ?= $(PREFIX)/share/qubes-netvm-hotplug
# yes: byte code compiled here. Packages pass no and let the distribution's
# tools do it (Debian: dh_python3 -> py3compile/py3clean in the maintainer
# scripts; Fedora: %py_byte_compile).
BYTECOMPILE ?= yes
# Where the distribution's python3 libraries are (the entry points run with
# -S, without site's list): Debian's; Fedora: sitelib and sitearch.
PYTHON_LIBDIRS ?= /usr/lib/python3/dist-packages
XEN_SCRIPTS_DIR ?= $(SYSCONFDIR)/xen/scripts
QUBES_LIBDIR ?= $(PREFIX)/lib/qubes
NM_DISPATCHER_DIR ?= $(SYSCONFDIR)/NetworkManager/dispatcher.d
# The three programs themselves; the paths Qubes uses are symlinks to them.
PKG_LIBDIR ?= $(PREFIX)/lib/qubes-netvm-hotplug
UDEV_RULES_DIR ?= $(PREFIX)/lib/udev/rules.d
SYSTEMD_UNIT_DIR ?= $(PREFIX)/lib/systemd/system
MAN8DIR ?= $(PREFIX)/share/man/man8
MANPAGES = vif-route-qubes.8 qubes-setup-dnat-to-ns.8
# Generated, never committed (see tools/mkman.py).
MAN_BUILD ?= build/man
RUNTIME_PACKAGES = qubesnet vif_route_qubes setup_dnat_to_ns
# The units that (re)load the netvm's base ruleset: each gets a drop-in that
# runs qubes-vif-reconcile.service afterwards.
RECONCILE_DROPINS = qubes-antispoof.service qubes-iptables.service nftables.service

.PHONY: all deps venv lint test test-debian-pyroute2 unit coverage demo reliability bench mutation mutation-sample \
	clean install uninstall \
	man deb rpm rpm-test package-test test-debian13

all: venv

# The venv sees the distribution's site-packages: the libnftables binding
# (python3-nftables) must match the system's libnftables and comes from there.
# editable_mode=compat puts the work tree on sys.path ahead of the
# distribution's directory: with the default (an import hook consulted after
# it), an installed qubes-netvm-hotplug package would shadow the work tree.
# pyroute2 is upgraded to the newest release even when the distribution's
# (python3-pyroute2) would satisfy setup.cfg: this venv tests the top of the
# supported range, DEB_VENV the bottom.
$(VENV)/.stamp: setup.cfg pyproject.toml
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(VPY) -m pip install --quiet --disable-pip-version-check -e '.[test]' --config-settings editable_mode=compat
	$(VPY) -m pip install --quiet --disable-pip-version-check --upgrade pyroute2
	touch $@

# The same suite on the distribution's pyroute2 (Debian 12: 0.7.2) and
# jeepney: the project is installed without dependencies (pip installs no
# pyroute2 here), only the test tools come from PyPI.
DEB_VENV ?= .venv-deb
$(DEB_VENV)/.stamp: setup.cfg pyproject.toml
	$(PYTHON) -m venv --system-site-packages $(DEB_VENV)
	$(DEB_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e . \
		--config-settings editable_mode=compat
	$(DEB_VENV)/bin/python -m pip install --quiet --disable-pip-version-check \
		'pytest >= 8' 'pytest-mock >= 3.12' 'hypothesis >= 6.100'
	touch $@

venv: $(VENV)/.stamp

# System packages (Debian, as root): scripts/bootstrap.sh lists them.
deps:
	sh scripts/bootstrap.sh

# Lint and types, configured in pyproject.toml: ruff over the tree, mypy
# strict on the runtime packages and checked on the simulator and tests.
# Both run even when the first finds something; either failing fails lint.
lint: venv
	status=0; $(VENV)/bin/ruff check . || status=1; $(VENV)/bin/mypy || status=1; \
		$(VPY) tools/mutation.py --check || status=1; exit $$status

# The whole suite, after lint. QUBES_REQUIRE_NETNS=1 turns "cannot run the
# namespace tests here" into a failure, never a silent skip.
test: lint
	QUBES_REQUIRE_NETNS=1 $(VPY) -m pytest $(PYTEST_ARGS)

# Fails when pyroute2 in DEB_VENV is not the distribution's package.
test-debian-pyroute2: $(DEB_VENV)/.stamp
	$(DEB_VENV)/bin/python -c 'import importlib.util as u, sys; \
		o = u.find_spec("pyroute2").origin; print("pyroute2 from", o); \
		sys.exit(not o.startswith("/usr/lib/python3/dist-packages/"))'
	dpkg-query -W python3-pyroute2
	QUBES_REQUIRE_NETNS=1 $(DEB_VENV)/bin/python -m pytest $(PYTEST_ARGS)

unit: venv
	$(VPY) -m pytest -m 'not netns' $(PYTEST_ARGS)

# The read side of the vif core was where tests could not reach (issue 16):
# each of these modules is held to COVERAGE_MIN on the unit tier alone.
COVERAGE_MIN ?= 85
COVERAGE_HELD = event observe admin survey
coverage: venv
	$(VPY) -m pytest -m 'not netns' --cov=vif_route_qubes --cov=qubesnet --cov-report=term-missing $(PYTEST_ARGS)
	status=0; for m in $(COVERAGE_HELD); do \
		$(VPY) -m coverage report --include=vif_route_qubes/$$m.py --fail-under=$(COVERAGE_MIN) || status=1; \
	done; rm -f .coverage; exit $$status

demo: venv
	$(VENV)/bin/qubes-netsim demo

# Hostile input, faults, load, soak and packet-level security invariants at
# full size (make test runs a fast subset of each), ending with the ledger
# table: inputs tried / rejected cleanly / state unchanged, faults injected /
# survived, load events / lost, soak cycles / leaks, security checks /
# violations.
reliability: venv
	QUBES_RELIABILITY=full QUBES_REQUIRE_NETNS=1 $(VPY) -m pytest tests/reliability tests/unit/test_properties.py $(PYTEST_ARGS)

# Mutants of the vif core's decisions, each made in a temporary copy of the
# tree: the table says whether the unit or the namespace tier killed it;
# any survivor fails (tools/mutation.py --help).
mutation: venv
	$(VPY) tools/mutation.py $(MUTATION_ARGS)

# Generated mutants (comparison, boolean, boundary, constant) by cosmic-ray,
# on the unit tests of each group of modules, in copies under
# build/mutation-sample/; a survivor not explained in docs/testing.md fails
# the run (tools/mutation_sample.py --help). Two groups side by side.
MUTATION_SAMPLE_JOBS ?= 2
mutation-sample: venv
	$(VPY) tools/mutation_sample.py --jobs $(MUTATION_SAMPLE_JOBS) $(MUTATION_SAMPLE_ARGS)

# Figures, not tests: our entry points from a regular (non-editable)
# install, against the references (bench/reference*.sh, reference-dnat.py)
# and the floor (the libnftables binding and a context through the same
# wrapper), wall and CPU time, in the simulated netvm.
BENCH_VENV ?= .bench-venv
BENCH_RUNS ?= 15
bench: venv
	rm -rf $(BENCH_VENV)
	$(PYTHON) -m venv --system-site-packages $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --disable-pip-version-check .
	mkdir -p $(BENCH_VENV)/refbin
	cc -O2 -o $(BENCH_VENV)/refbin/qubesdb-read bench/qubesdb-read.c
	$(VPY) bench/run.py --runs $(BENCH_RUNS) --ours-python $(abspath $(BENCH_VENV))/bin/python \
		--reference-bin $(abspath $(BENCH_VENV))/refbin

# The runtime packages (not the simulator, not the tests) and the entry
# points at the paths Qubes uses. Dependencies come from the distribution:
# python3-pyroute2 (>= 0.7.2), python3-nftables, python3-jeepney (the
# Debian and RPM packages declare them: debian/control, rpm/).
# The manual pages, from the entry points' argument parsers (tools/mkman.py).
man:
	PYTHONPATH=$(CURDIR) $(PYTHON) -B tools/mkman.py $(MAN_BUILD)

install: man
	for pkg in $(RUNTIME_PACKAGES); do \
		install -d -m 0755 $(DESTDIR)$(PYTHONDIR)/$$pkg && \
		install -m 0644 $$pkg/*.py $(DESTDIR)$(PYTHONDIR)/$$pkg/ || exit 1; \
	done
	install -d -m 0755 $(DESTDIR)$(PYTHONDIR)/qubesnet/netlink
	install -m 0644 qubesnet/netlink/*.py $(DESTDIR)$(PYTHONDIR)/qubesnet/netlink/
	# Byte code now: the first VM start should not pay for compiling.
	if [ "$(BYTECOMPILE)" = yes ]; then \
		for pkg in $(RUNTIME_PACKAGES); do \
			$(PYTHON) -m compileall -q -d $(PYTHONDIR)/$$pkg $(DESTDIR)$(PYTHONDIR)/$$pkg || exit 1; \
		done; \
	fi
	# The programs live in PKG_LIBDIR; the paths Qubes uses (owned there by
	# qubes-core-agent-networking and -network-manager) are symlinks to
	# them. A package takes those paths over by diverting the originals
	# (debian/) or by scriptlets (rpm/): with symlinks, nothing of ours under
	# /etc is a conffile that dpkg would keep after a remove, on top of the
	# original it has to put back.
	install -d -m 0755 $(DESTDIR)$(PKG_LIBDIR) $(DESTDIR)$(XEN_SCRIPTS_DIR) $(DESTDIR)$(QUBES_LIBDIR) \
		$(DESTDIR)$(NM_DISPATCHER_DIR)
	sed -e 's|@PYTHONDIR@|$(PYTHONDIR)|' -e 's|@PYTHON_LIBDIRS@|$(PYTHON_LIBDIRS)|' bin/vif-route-qubes > $(DESTDIR)$(PKG_LIBDIR)/vif-route-qubes
	sed -e 's|@PYTHONDIR@|$(PYTHONDIR)|' -e 's|@PYTHON_LIBDIRS@|$(PYTHON_LIBDIRS)|' bin/qubes-setup-dnat-to-ns > $(DESTDIR)$(PKG_LIBDIR)/qubes-setup-dnat-to-ns
	install -m 0755 dispatcher/qubes-nmhook $(DESTDIR)$(PKG_LIBDIR)/qubes-nmhook
	chmod 0755 $(DESTDIR)$(PKG_LIBDIR)/vif-route-qubes $(DESTDIR)$(PKG_LIBDIR)/qubes-setup-dnat-to-ns
	ln -sfr $(DESTDIR)$(PKG_LIBDIR)/vif-route-qubes $(DESTDIR)$(XEN_SCRIPTS_DIR)/vif-route-qubes
	ln -sfr $(DESTDIR)$(PKG_LIBDIR)/qubes-setup-dnat-to-ns $(DESTDIR)$(QUBES_LIBDIR)/qubes-setup-dnat-to-ns
	ln -sfr $(DESTDIR)$(PKG_LIBDIR)/qubes-nmhook $(DESTDIR)$(NM_DISPATCHER_DIR)/qubes-nmhook
	install -D -m 0644 udev/90-qubes-vif-route.rules $(DESTDIR)$(UDEV_RULES_DIR)/90-qubes-vif-route.rules
	install -D -m 0644 systemd/qubes-setup-dnat-to-ns-watch.service \
		$(DESTDIR)$(SYSTEMD_UNIT_DIR)/qubes-setup-dnat-to-ns-watch.service
	for unit in qubes-vif-reconcile.service qubes-vif-watch.service; do \
		install -D -m 0644 systemd/$$unit $(DESTDIR)$(SYSTEMD_UNIT_DIR)/$$unit || exit 1; \
	done
	for unit in $(RECONCILE_DROPINS); do \
		install -D -m 0644 systemd/$$unit.d/50-qubes-vif-reconcile.conf \
			$(DESTDIR)$(SYSTEMD_UNIT_DIR)/$$unit.d/50-qubes-vif-reconcile.conf || exit 1; \
	done
	install -d -m 0755 $(DESTDIR)$(MAN8DIR)
	for page in $(MANPAGES); do install -m 0644 $(MAN_BUILD)/$$page $(DESTDIR)$(MAN8DIR)/ || exit 1; done

uninstall:
	for pkg in $(RUNTIME_PACKAGES); do rm -rf $(DESTDIR)$(PYTHONDIR)/$$pkg; done
	-rmdir $(DESTDIR)$(PYTHONDIR) 2>/dev/null
	rm -rf $(DESTDIR)$(PKG_LIBDIR)
	rm -f $(DESTDIR)$(XEN_SCRIPTS_DIR)/vif-route-qubes \
		$(DESTDIR)$(QUBES_LIBDIR)/qubes-setup-dnat-to-ns \
		$(DESTDIR)$(NM_DISPATCHER_DIR)/qubes-nmhook \
		$(DESTDIR)$(UDEV_RULES_DIR)/90-qubes-vif-route.rules \
		$(DESTDIR)$(SYSTEMD_UNIT_DIR)/qubes-setup-dnat-to-ns-watch.service \
		$(DESTDIR)$(SYSTEMD_UNIT_DIR)/qubes-vif-reconcile.service \
		$(DESTDIR)$(SYSTEMD_UNIT_DIR)/qubes-vif-watch.service
	for unit in $(RECONCILE_DROPINS); do \
		rm -f $(DESTDIR)$(SYSTEMD_UNIT_DIR)/$$unit.d/50-qubes-vif-reconcile.conf; \
	done
	for page in $(MANPAGES); do rm -f $(DESTDIR)$(MAN8DIR)/$$page; done

# Packages are built from a copy of the tracked (and new, not ignored) files,
# never in the work tree: dpkg-buildpackage writes next to its source tree.
PKG_BUILD ?= build/packages
PKG_VERSION = $(shell sed -n 's/^version = //p' setup.cfg)

$(PKG_BUILD)/src: FORCE
	rm -rf $(PKG_BUILD)/src && mkdir -p $(PKG_BUILD)/src/qubes-netvm-hotplug-$(PKG_VERSION)
	git ls-files -z --cached --others --exclude-standard | \
		xargs -0 cp -P --parents -t $(PKG_BUILD)/src/qubes-netvm-hotplug-$(PKG_VERSION)

deb: $(PKG_BUILD)/src
	cd $(PKG_BUILD)/src/qubes-netvm-hotplug-$(PKG_VERSION) && dpkg-buildpackage -b -us -uc
	cp $(PKG_BUILD)/src/qubes-netvm-hotplug_$(PKG_VERSION)_all.deb $(PKG_BUILD)/
	lintian --info $(PKG_BUILD)/qubes-netvm-hotplug_$(PKG_VERSION)_all.deb

rpm: $(PKG_BUILD)/src
	tar -C $(PKG_BUILD)/src -czf $(PKG_BUILD)/src/qubes-netvm-hotplug-$(PKG_VERSION).tar.gz \
		qubes-netvm-hotplug-$(PKG_VERSION)
	rpmbuild -bb --nodeps --define '_topdir $(abspath $(PKG_BUILD))/rpmbuild' \
		--define '_sourcedir $(abspath $(PKG_BUILD))/src' rpm/qubes-netvm-hotplug.spec
	cp $(PKG_BUILD)/rpmbuild/RPMS/noarch/qubes-netvm-hotplug-$(PKG_VERSION)-*.noarch.rpm $(PKG_BUILD)/

# Root, Debian's rpm: install, upgrade and erase ours and stand-in Qubes
# packages with rpm --root in a scratch root (tests/package/rpm_roundtrip.sh).
.PHONY: rpm-test
rpm-test: rpm
	sh tests/package/rpm_roundtrip.sh $(PKG_BUILD)

# Root, Debian: the round trip an administrator would make (tests/package/).
package-test: venv deb
	sh tests/package/roundtrip.sh $(PKG_BUILD)/qubes-netvm-hotplug_$(PKG_VERSION)_all.deb

# Root: a trixie root from Debian's mirror (the one this machine's apt uses),
# the .deb built there with trixie's debhelper, the unit tier and the package
# round trip (integration and NetworkManager tests on the installed programs)
# run there (tests/package/debian13.sh).
test-debian13:
	sh tests/package/debian13.sh

FORCE:

clean:
	rm -rf $(VENV) $(DEB_VENV) build *.egg-info .pytest_cache .hypothesis
	find . -name __pycache__ -prune -exec rm -rf {} +
