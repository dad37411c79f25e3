# Two commands set up a fresh machine: `make demo` (the main job) and `make test` (the whole suite).
# Both create .venv (Python 3.11, ROS 2 Kilted, everything) from the pinned requirement files when it is missing or
# stale. `make test` also runs the Jazzy job: .venv-jazzy (Python 3.12, ROS 2 Jazzy wheels, runtime requirements only,
# no torch) runs the tests marked ros_runtime against ONNX models exported by .venv.
SHELL := /bin/bash
PY := .venv/bin/python
STAMP := .venv/.requirements.sha
MAIN_REQS := requirements.txt requirements-ros.txt requirements-runtime.txt requirements-train.txt \
	requirements-export.txt requirements-tensorrt.txt requirements-test.txt
REQ_HASH := $(shell cat $(MAIN_REQS) | sha256sum | cut -c1-16)
JAZZY := .venv-jazzy
JAZZY_PY := $(JAZZY)/bin/python
JAZZY_REQS := requirements-ros-jazzy.txt requirements-runtime.txt requirements-test.txt
JAZZY_HASH := $(shell cat $(JAZZY_REQS) | sha256sum | cut -c1-16)
PYTHON312 ?= $(firstword $(wildcard $(shell pyenv root 2>/dev/null)/versions/3.12*/bin/python3.12) $(shell command -v python3.12))
# ROS traffic stays on this host; each run picks its own domain unless one is given.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export ROS_DOMAIN_ID ?= $(shell echo $$(( ($$$$ % 90) + 5 )))
export FASTDDS_DEFAULT_PROFILES_FILE := $(CURDIR)/config/fastdds_large_frames.xml

.PHONY: venv venv-jazzy test lint pytest test-numerics colcon test-jazzy demo bench clean

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

# The torch-free runtime venv: ROS 2 Jazzy wheels + requirements-runtime.txt + pytest (from requirements-test.txt).
venv-jazzy:
	@if [ -z "$(PYTHON312)" ]; then echo "[mgeo] no python3.12 found (set PYTHON312=...)"; exit 1; fi
	@if [ ! -x $(JAZZY_PY) ] || [ "$$(cat $(JAZZY)/.requirements.sha 2>/dev/null)" != "$(JAZZY_HASH)" ]; then \
	  echo "[mgeo] creating $(JAZZY) (Python 3.12, ROS 2 Jazzy, runtime only; about 30 s)"; \
	  rm -rf $(JAZZY) && $(PYTHON312) -m venv $(JAZZY) && \
	  $(JAZZY)/bin/pip install -q --upgrade pip==26.3 && \
	  $(JAZZY)/bin/pip install -q -r requirements-ros-jazzy.txt -r requirements-runtime.txt \
	    "$$(grep -E '^pytest==' requirements-test.txt)" 2>&1 | grep -v '^WARNING: Location' || true; \
	  $(JAZZY_PY) -c "import rclpy, onnxruntime, cv2" && echo "$(JAZZY_HASH)" > $(JAZZY)/.requirements.sha; \
	fi

lint: venv
	.venv/bin/ruff check .

pytest: venv
	$(PY) -m pytest -q -ra -m "not colcon and not runtime_venv" test

# The numeric tests (geometry, frame stage, post graph, model goldens, eval metrics, losses) once more with other CPU
# kernels (test/kernel_env.py: OpenBLAS core, numpy's SIMD, torch, OpenCV), so that a result which holds only with
# this CPU's kernels fails here rather than on the next machine: the SSE level, then the AVX2 level where the CPU has it.
NUMERIC_TESTS := test/geometry test/runtime/test_runtime_frame_stage.py test/runtime/test_runtime_flying_pixels.py \
	test/runtime/test_runtime_confidence.py test/runtime/test_runtime_post_graph.py test/runtime/test_runtime_predictor.py \
	test/model/test_model_golden.py test/model/test_model_forward.py test/eval/test_eval_metrics.py \
	test/eval/test_eval_flying_pixels.py test/eval/test_eval_evaluate.py test/train/test_train_losses.py \
	test/train/test_train_refine.py
test-numerics: venv
	@set -eo pipefail; start=$$(date +%s); \
	  for level in sse avx2; do \
	    vars=$$($(PY) test/kernel_env.py --show $$level); \
	    if [ -z "$$vars" ]; then echo "[mgeo] numeric tests: this CPU has no $$level level"; continue; fi; \
	    echo "[mgeo] numeric tests with $$level kernels: $$vars"; \
	    env $$vars $(PY) -m pytest -q -ra -p no:cacheprovider -m "not colcon and not runtime_venv and not ros" \
	      $(NUMERIC_TESTS); \
	  done; \
	  echo "[mgeo] numeric tests under other CPU kernels: $$(( $$(date +%s) - start )) s"

colcon: venv
	@set -e; source .venv/bin/activate; export AMENT_PREFIX_PATH=$$VIRTUAL_ENV; \
	  rm -rf build install log; \
	  colcon build --symlink-install; \
	  set +u; source install/setup.bash; set -u; \
	  colcon test --event-handlers console_direct+ --pytest-args -m colcon; \
	  colcon test-result --verbose

# Jazzy job: .venv exports the ONNX models (it has torch), then the Jazzy venv runs every test module that holds
# ros_runtime tests, selecting them by marker (the torch-needing tests in those modules are deselected, not skipped).
test-jazzy: venv venv-jazzy
	@set -eo pipefail; start=$$(date +%s); models=$$(mktemp -d); trap 'rm -rf "$$models"' EXIT; \
	  $(PY) test/runtime_models.py "$$models" 2>&1 | grep -v Warning | tail -1; \
	  MGEO_RUNTIME_MODELS="$$models" PYTHONPATH=$(CURDIR) $(JAZZY_PY) -m pytest -q -ra -p no:cacheprovider \
	    -m "ros_runtime or runtime_venv" $$(grep -rl --include='test_*.py' -E 'ros_runtime|runtime_venv' test); \
	  echo "[mgeo] Jazzy job (model export + torch-free tests): $$(( $$(date +%s) - start )) s"

test: lint pytest test-numerics colcon test-jazzy

demo: venv
	$(PY) -m mgeo_ros.cli demo --out demo_out

bench: venv
	$(PY) -m mgeo_ros.cli bench --default-model

clean:
	rm -rf build install log demo_out
