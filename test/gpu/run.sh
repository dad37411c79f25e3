#!/usr/bin/env bash
# One GPU session in one go (<= 11 minutes on one GPU, no network): pytest's GPU tests, the benchmark table, then the
# node as a robot runs it with the real forward on the GPU, and whether each backend's forward releases the GIL.
#
#   test/gpu/run.sh OUT_DIR
#
# Uses the Python in $PYTHON (default: .venv/bin/python, else python3) with this repository on PYTHONPATH. Wheels
# carried beside the repository in test/gpu/wheels/ (cuda-python, tensorrt-cu12 and its libs, onnxruntime-gpu...)
# are installed first, offline, into a throw-away venv that sees the base environment (--system-site-packages).
# Writes OUT_DIR/table.md (the table for the README, hardware named), OUT_DIR/results.json, OUT_DIR/pytest.txt,
# OUT_DIR/env.txt, OUT_DIR/node_bench.{json,txt}, OUT_DIR/gil.json. Exit status: pytest's, or the benchmark's when
# pytest passed.
set -uo pipefail
OUT=${1:?usage: test/gpu/run.sh OUT_DIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/../.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-77}
export MGEO_CACHE_DIR=$OUT/cache PIP_NO_INDEX=1

if compgen -G "test/gpu/wheels/*.whl" > /dev/null; then
  "$PY" -m venv --system-site-packages "$OUT/venv" && "$OUT/venv/bin/python" -m pip install -q --no-index \
    --find-links test/gpu/wheels test/gpu/wheels/*.whl && PY=$OUT/venv/bin/python
fi

{ nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv 2>&1
  "$PY" - <<'PY'
import importlib
for m in ('torch', 'tensorrt', 'cuda.bindings', 'onnxruntime'):
    try:
        mod = importlib.import_module(m)
        print(m, getattr(mod, '__version__', 'present'))
    except Exception as e:
        print(m, 'absent:', e)
PY
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# 1) the GPU tests (TensorRT, probes, the post graph on CUDA and TensorRT) and the CPU-side ones, bounded to 4 min
timeout 240 "$PY" -m pytest -q -rs test/runtime/test_runtime_tensorrt.py test/runtime/test_runtime_probe.py test/runtime/test_runtime_post_graph.py \
  2>&1 | tee "$OUT/pytest.txt"
rc_tests=${PIPESTATUS[0]}

# 2) the benchmark table, bounded to 4 minutes
timeout 240 "$PY" test/gpu/bench_gpu.py "$OUT" --runs 30 --warmup 5 2>&1 | tee "$OUT/bench.txt"
rc_bench=${PIPESTATUS[0]}

# 3) the node with its real forward (TensorRT fp16 engine from step 2 at 640x480; torch-CUDA fp16 at 640x480 and
#    1280x720), every output subscribed: published rate, own CPU against the transport floor, camera rates; and how
#    long each GPU backend's forward keeps other Python threads waiting. Bounded to 3 minutes; failures are reported
#    in the files, they do not change the exit status.
ENGINE=$OUT/engines/default_fp16.engine
{ [ -f "$ENGINE" ] && timeout 80 "$PY" -m mgeo_ros.cli bench --node "$ENGINE" --forward-ms real --backend tensorrt \
    --size 640x480 --seconds 4 --rates 5,30,100 --json > "$OUT/node_bench_tensorrt.json"
  timeout 80 "$PY" -m mgeo_ros.cli bench --node --forward-ms real --backend torch --param precision=fp16 \
    --seconds 4 --json > "$OUT/node_bench_torch.json"
  timeout 30 "$PY" test/gpu/gil_gpu.py "$OUT"; } 2>&1 | tail -40 | tee "$OUT/node_bench.txt"

echo "pytest exit $rc_tests, bench exit $rc_bench; table in $OUT/table.md"
[ "$rc_tests" -ne 0 ] && exit "$rc_tests"
exit "$rc_bench"
