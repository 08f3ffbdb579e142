# Qubes network-VM hotplug entry points.
#
#   make deps          Debian packages (root): see scripts/bootstrap.sh
#   make venv          .venv with the project and its test tools installed
#   make test          the whole test suite (needs root: network namespaces)
#   make unit          the tests that need neither root nor namespaces
#   make demo          the main job in the simulated environment
#   make bench         performance figures (not a test)
#   make install DESTDIR=... PREFIX=/usr

PYTHON ?= /usr/bin/python3
VENV ?= .venv
VPY = $(VENV)/bin/python

.PHONY: all deps venv test unit demo bench clean

all: venv

# The venv sees the distribution's site-packages: the libnftables binding
# (python3-nftables) must match the system's libnftables and comes from there.
$(VENV)/.stamp: setup.cfg pyproject.toml
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(VPY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

venv: $(VENV)/.stamp

# System packages (Debian, as root): scripts/bootstrap.sh lists them.
deps:
	sh scripts/bootstrap.sh

# The whole suite. QUBES_REQUIRE_NETNS=1 turns "cannot run the namespace
# tests here" into a failure, never a silent skip.
test: venv
	QUBES_REQUIRE_NETNS=1 $(VPY) -m pytest $(PYTEST_ARGS)

unit: venv
	$(VPY) -m pytest -m 'not netns' $(PYTEST_ARGS)

demo: venv
	$(VENV)/bin/qubes-netsim demo

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
	find . -name __pycache__ -prune -exec rm -rf {} +
