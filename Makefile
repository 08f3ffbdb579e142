# Qubes network-VM hotplug entry points.
#
#   make deps          Debian packages (root): see scripts/bootstrap.sh
#   make venv          .venv with the project and its test tools installed
#   make lint          ruff and mypy (zero findings; make test runs it first)
#   make test          lint, then the whole test suite (needs root: network namespaces)
#   make unit          the tests that need neither root nor namespaces
#   make demo          the main job in the simulated environment
#   make reliability   bad inputs, faults, load, soak, security at full size
#   make bench         performance figures (not a test)
#   make mutation      hand-picked mutants of the vif core, each must be killed
#                      by the unit or the namespace tier (root; not in make test)
#   make install DESTDIR=... PREFIX=/usr

PYTHON ?= /usr/bin/python3
VENV ?= .venv
VPY = $(VENV)/bin/python

# Install layout (Debian paths; override on the command line).
DESTDIR ?=
PREFIX ?= /usr
SYSCONFDIR ?= /etc
PYTHONDIR ?= $(PREFIX)/lib/python3/dist-packages
XEN_SCRIPTS_DIR ?= $(SYSCONFDIR)/xen/scripts
QUBES_LIBDIR ?= $(PREFIX)/lib/qubes
NM_DISPATCHER_DIR ?= $(SYSCONFDIR)/NetworkManager/dispatcher.d
UDEV_RULES_DIR ?= $(PREFIX)/lib/udev/rules.d
SYSTEMD_UNIT_DIR ?= $(PREFIX)/lib/systemd/system
RUNTIME_PACKAGES = qubesnet vif_route_qubes setup_dnat_to_ns
# The units that (re)load the netvm's base ruleset: each gets a drop-in that
# runs qubes-vif-reconcile.service afterwards.
RECONCILE_DROPINS = qubes-antispoof.service qubes-iptables.service nftables.service

.PHONY: all deps venv lint test unit demo reliability bench mutation clean install install-deps uninstall

all: venv

# The venv sees the distribution's site-packages: the libnftables binding
# (python3-nftables) must match the system's libnftables and comes from there.
$(VENV)/.stamp: setup.cfg pyproject.toml
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(VPY) -m pip install --quiet --disable-pip-version-check --config-settings editable_mode=compat -e '.[test]'
	touch $@

venv: $(VENV)/.stamp

# System packages (Debian, as root): scripts/bootstrap.sh lists them.
deps:
	sh scripts/bootstrap.sh

# Lint and types, configured in pyproject.toml: ruff over the tree, mypy
# strict on the runtime packages and checked on the simulator and tests.
# Both run even when the first finds something; either failing fails lint.
lint: venv
	status=0; $(VENV)/bin/ruff check . || status=1; $(VENV)/bin/mypy || status=1; exit $$status

# The whole suite, after lint. QUBES_REQUIRE_NETNS=1 turns "cannot run the
# namespace tests here" into a failure, never a silent skip.
test: lint
	QUBES_REQUIRE_NETNS=1 $(VPY) -m pytest $(PYTEST_ARGS)

unit: venv
	$(VPY) -m pytest -m 'not netns' $(PYTEST_ARGS)

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

# Figures, not tests: our entry points from a regular (non-editable)
# install, against bench/reference.sh, in the simulated netvm.
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
# points at the paths Qubes uses. Dependencies: python3-nftables and
# python3-jeepney from the distribution, pyroute2 0.9.7 (make install-deps).
install:
	for pkg in $(RUNTIME_PACKAGES); do \
		install -d -m 0755 $(DESTDIR)$(PYTHONDIR)/$$pkg && \
		install -m 0644 $$pkg/*.py $(DESTDIR)$(PYTHONDIR)/$$pkg/ || exit 1; \
	done
	install -d -m 0755 $(DESTDIR)$(PYTHONDIR)/qubesnet/netlink
	install -m 0644 qubesnet/netlink/*.py $(DESTDIR)$(PYTHONDIR)/qubesnet/netlink/
	# Byte code now: the first VM start should not pay for compiling.
	for pkg in $(RUNTIME_PACKAGES); do \
		$(PYTHON) -m compileall -q -d $(PYTHONDIR)/$$pkg $(DESTDIR)$(PYTHONDIR)/$$pkg || exit 1; \
	done
	install -d -m 0755 $(DESTDIR)$(XEN_SCRIPTS_DIR) $(DESTDIR)$(QUBES_LIBDIR)
	sed 's|@PYTHONDIR@|$(PYTHONDIR)|' bin/vif-route-qubes > $(DESTDIR)$(XEN_SCRIPTS_DIR)/vif-route-qubes
	sed 's|@PYTHONDIR@|$(PYTHONDIR)|' bin/qubes-setup-dnat-to-ns > $(DESTDIR)$(QUBES_LIBDIR)/qubes-setup-dnat-to-ns
	chmod 0755 $(DESTDIR)$(XEN_SCRIPTS_DIR)/vif-route-qubes $(DESTDIR)$(QUBES_LIBDIR)/qubes-setup-dnat-to-ns
	install -D -m 0755 dispatcher/qubes-nmhook $(DESTDIR)$(NM_DISPATCHER_DIR)/qubes-nmhook
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

install-deps: venv
	$(VPY) -m pip install --quiet --no-deps --target $(DESTDIR)$(PYTHONDIR) pyroute2==0.9.7

uninstall:
	for pkg in $(RUNTIME_PACKAGES); do rm -rf $(DESTDIR)$(PYTHONDIR)/$$pkg; done
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

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
	find . -name __pycache__ -prune -exec rm -rf {} +
