# Two commands set up a fresh machine: `make demo` (the main job) and `make test` (the whole suite).
# Both create .venv (Python 3.11) from the pinned requirement files when it is missing or stale.
SHELL := /bin/bash
PY := .venv/bin/python
STAMP := .venv/.requirements.sha
REQ_HASH := $(shell cat requirements.txt requirements-ros.txt | sha256sum | cut -c1-16)
# ROS traffic stays on this host; each run picks its own domain unless one is given.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export ROS_DOMAIN_ID ?= $(shell echo $$(( ($$$$ % 90) + 5 )))
export FASTDDS_DEFAULT_PROFILES_FILE := $(CURDIR)/config/fastdds_large_frames.xml

.PHONY: venv test lint pytest colcon demo bench clean

venv:
	@if [ ! -x $(PY) ] || [ "$$(cat $(STAMP) 2>/dev/null)" != "$(REQ_HASH)" ]; then \
	  echo "[mgeo] creating .venv from pinned requirements (about 90 s)"; \
	  rm -rf .venv && python3.11 -m venv .venv && \
	  .venv/bin/pip install -q --upgrade pip==26.3 && \
	  .venv/bin/pip install -q -r requirements.txt && \
	  echo "$(REQ_HASH)" > $(STAMP); \
	fi
	@# console scripts come from setup.py: re-register them when it changes (3 s)
	@if [ setup.py -nt .venv/.editable ]; then \
	  .venv/bin/pip install -q --no-deps --no-build-isolation -e . 2>&1 | grep -v '^WARNING: Location' || true; \
	  touch .venv/.editable; fi

lint: venv
	.venv/bin/ruff check .

pytest: venv
	$(PY) -m pytest -q -ra -m "not colcon" test

colcon: venv
	@set -e; source .venv/bin/activate; export AMENT_PREFIX_PATH=$$VIRTUAL_ENV; \
	  rm -rf build install log; \
	  colcon build --symlink-install; \
	  set +u; source install/setup.bash; set -u; \
	  colcon test --event-handlers console_direct+ --pytest-args -m colcon; \
	  colcon test-result --verbose

test: lint pytest colcon

demo: venv
	$(PY) -m mgeo_ros.cli demo --out demo_out

bench: venv
	$(PY) -m mgeo_ros.cli bench --default-model

clean:
	rm -rf build install log demo_out
