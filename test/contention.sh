#!/usr/bin/env bash
# Runs a command, by default the test suite, with a busy loop on each core beside
# it, as on the small shared machines CI and developers use. The loops stop when
# the command ends.
#
#   test/contention.sh                                   # go test -race -count=1 ./...
#   test/contention.sh go test -race -count=1 ./test -run TestSIGKILL
#   FLOWGUARD_BUSY_LOOPS=4 test/contention.sh ...        # another number of loops
set -euo pipefail
cd "$(dirname "$0")/.."
loops=${FLOWGUARD_BUSY_LOOPS:-$(nproc)}
pids=()
stop() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap stop EXIT
for _ in $(seq "$loops"); do
  ( while :; do :; done ) &
  pids+=("$!")
done
echo "contention.sh: $loops busy loops running beside: ${*:-go test -race -count=1 ./...}" >&2
if [ $# -eq 0 ]; then
  set -- go test -race -count=1 ./...
fi
"$@"
