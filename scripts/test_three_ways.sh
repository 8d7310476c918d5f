#!/usr/bin/env bash
# Run the test suite three ways, to show that no test depends on the tests before it or on the
# thread count:
#
#   1. in file order, as CI runs it (`python -m pytest -q`);
#   2. shuffled by pytest-randomly (`-p randomly`), with the seed printed so that a failure can
#      be replayed: `python -m pytest -p randomly --randomly-seed=<seed>`;
#   3. on one thread (`OMP_NUM_THREADS=1`), in file order.
#
#     bash scripts/test_three_ways.sh                       # the whole suite, a fresh seed
#     SEED=1234 bash scripts/test_three_ways.sh             # replay a shuffled order
#     bash scripts/test_three_ways.sh tests/test_metrics.py # extra arguments go to each pytest
#
# Every way runs even when an earlier one fails; the summary at the end names the ones that
# failed, and the exit status is 1 if any did. Needs the `test` extra (pytest-randomly).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
SEED="${SEED:-$("$PYTHON" -c 'import random; print(random.randrange(2**32))')}"

names=() codes=()
way() {  # way <name> <command...>
    local name="$1"
    shift
    echo "=== $name: $*"
    "$@"
    local code=$?
    names+=("$name") codes+=("$code")
    echo "=== $name: exit $code"
}

way "file order" "$PYTHON" -m pytest -q "$@"
way "random order (seed $SEED)" "$PYTHON" -m pytest -q -p randomly --randomly-seed="$SEED" "$@"
way "OMP_NUM_THREADS=1" env OMP_NUM_THREADS=1 "$PYTHON" -m pytest -q "$@"

status=0
echo "=== summary (random seed $SEED)"
for i in "${!names[@]}"; do
    result=passed
    if [ "${codes[$i]}" -ne 0 ]; then result="FAILED (exit ${codes[$i]})" status=1; fi
    echo "    ${names[$i]}: $result"
done
exit "$status"
