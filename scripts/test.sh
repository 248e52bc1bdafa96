#!/usr/bin/env bash
# Installs everything Teal needs, builds, and runs every test against real servers.
# This is the README's test command; .ci/run calls exactly this.
#   scripts/test.sh                      all tests
#   scripts/test.sh --filter NAME        passes extra arguments to `dotnet test`
set -euo pipefail
cd "$(dirname "$0")/.."

started=$SECONDS
scripts/setup.sh
dotnet build Teal.slnx -c Release -nologo -clp:ErrorsOnly

status=0
# The whole output is kept: CI shows only its tail, so the failures are repeated at the end.
log=artifacts/test-output.log
mkdir -p artifacts
# The suite is bound by the CPU of two cores, and a fifth of it went to the JIT: every teal
# serve, teal proxy and teal command the tests start is a new process, and tiered PGO compiles
# each hot method twice more (instrumented, then optimized) before such a process ends. Without
# it two end-to-end tests took 70 against 74-79 s of CPU. Only the code's speed differs; what
# the tests check does not depend on it (the speed bars live in bench/, which keeps the default).
export DOTNET_TieredPGO=0
# A hung test is reported with a dump instead of eating CI's time budget.
dotnet test Teal.slnx -c Release --no-build -nologo \
  --blame-hang-timeout 10m --blame-hang-dump-type none \
  --logger "console;verbosity=normal" "$@" 2>&1 | tee "$log" || status=$?
# The core of the switchover suite once more on a PostgreSQL state store (TEAL_TEST_STATE): the
# whole suite on both would double CI's longest part. Under load, rollback, stop and resume
# (crash recovery on it is covered by SharedStateTests' takeover mid-switchover; the switchover
# timeout's rollback, which only waits out 30 s, by the main run). After the main run, not beside
# it: on two cores a third test process slowed every other (the suite took 1492 s, not 1360).
if [ $# -eq 0 ]; then
  TEAL_TEST_STATE=postgresql dotnet test tests/Teal.EndToEnd.Tests -c Release --no-build -nologo \
    --blame-hang-timeout 10m --blame-hang-dump-type none --logger "console;verbosity=normal" \
    --filter "FullyQualifiedName~SwitchoverUnderLoadTests|FullyQualifiedName~RollbackTests.Switchover_GreenStoppedMidway|FullyQualifiedName~StopAndResumeTests" \
    2>&1 | tee -a "$log" || status=$?
fi
if grep -q '^  Failed ' "$log"; then
  echo "=== failed tests (whole output in $log) ===" >&2
  grep -A25 '^  Failed ' "$log" | grep -v '^\s*at System\.' | head -200 >&2
fi

# Last line of defence behind the fixtures' own cleanup: no test server outlives the run.
scripts/stop-test-servers.sh
echo "test.sh: finished in $((SECONDS - started)) s with status $status" >&2
exit $status
