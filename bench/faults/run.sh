#!/usr/bin/env bash
# Torture run: N switchovers (default 50), each under pgbench TPC-B through Teal's proxy endpoint,
# a probe writing through the endpoint and one superuser client writing straight to blue and one
# straight to green, with `kill -9` of `teal serve` at a random moment of the switchover, then a
# restart and recovery. Prints ONE JSON document on stdout; progress on stderr.
# How to read it: bench/faults/README.md.
#
#   bench/faults/run.sh [N] [SEED]      N rounds (default 50); SEED makes the crash moments repeatable
set -euo pipefail
N="${1:-50}"
SEED="${2:-$RANDOM}"
root="$(cd "$(dirname "$0")/../.." && pwd)"

echo "faults: building teal and the bench (Release)" >&2
# The bench starts the built teal.dll (tests/Teal.Testing's RepoPaths), so the CLI is built too.
dotnet build "$root/src/Teal.Cli" -c Release -v quiet -nologo -clp:ErrorsOnly >&2
dotnet build "$root/bench/Teal.Bench.Faults" -c Release -v quiet -nologo -clp:ErrorsOnly >&2

echo "faults: $N rounds, seed $SEED" >&2
dotnet "$root/bench/Teal.Bench.Faults/bin/Release/net10.0/Teal.Bench.Faults.dll" --rounds "$N" --seed "$SEED"
