#!/usr/bin/env bash
# GPU checks and figures (issue 22) on a machine with one CUDA GPU: bench/README.md, "GPU".
#
#   bash bench/gpu.sh                 # the gpu tests, then bench/gpu.py's JSON lines
#   bash bench/gpu.sh --quick         # arguments go to bench/gpu.py; GPU_TESTS=0 skips the tests
#
# Without a CUDA device it stops at once with one line and exit code 3 (`--device cpu`: a dry run
# of the script's own code on the CPU, for tests). The Python is $PYTHON, else .venv/bin/python
# when there is one, else python3 (a GPU image's, with torch for CUDA). The packages the project
# needs beyond that image come from the wheels in $GPU_WHEELS (default .whl/, from `make
# gpu-wheels` where pip reaches an index; empty: none), installed into a folder of their own that
# goes first on PYTHONPATH; the repository goes there too (the package is not installed).
# stdout holds the JSON lines alone; the tests and the logs write to stderr.
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${PYTHON:-}" ]]; then
    PY=$PYTHON
elif [[ -x .venv/bin/python ]]; then
    PY=.venv/bin/python
else
    PY=python3
fi

"$PY" bench/gpu.py --check "$@" || exit $?

WHEELS=${GPU_WHEELS-.whl}
if [[ -n "$WHEELS" ]] && compgen -G "$WHEELS/*.whl" >/dev/null; then
    SITE=/tmp/forecast-gpu-site
    "$PY" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "$WHEELS"/*.whl || { echo "bench/gpu.sh: installing $WHEELS/*.whl failed" >&2; exit 1; }
    export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if ! "$PY" -c "import hydra, omegaconf, mlflow" 2>/dev/null; then
    echo "bench/gpu.sh: hydra-core, omegaconf or mlflow is missing: run make gpu-wheels where pip" \
        "reaches an index, and bring .whl/ along (the device tool: carry [\".whl\"])" >&2
    exit 1
fi

tests=0
if [[ "${GPU_TESTS:-1}" != 0 ]]; then
    "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py -rs >&2
    tests=$?
fi
"$PY" bench/gpu.py "$@"
figures=$?
if ((tests != 0)); then
    echo "bench/gpu.sh: the gpu tests failed (exit $tests); the figures above ran anyway" >&2
fi
exit $((tests != 0 ? tests : figures))
