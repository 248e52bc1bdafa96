#!/usr/bin/env bash
# Switchover benchmark (PRODUCT.md §11, "write pause at switchover" and "client errors"):
#   1. the hand-rolled PgBouncer switchover (handrolled-pgbouncer.sh, its default run count),
#      the reference a careful operator can build with psql;
#   2. N switchovers (default 10) under pgbench TPC-B (8 clients) plus a probe writer, through
#      Teal's proxy and then through a PgBouncer endpoint Teal drives (bench/Teal.Bench.Switchover);
#   3. MariaDB: the hand-rolled HAProxy switchover (handrolled-haproxy-mariadb.sh, N runs), then N
#      MariaDB 10.11 switchovers through Teal's proxy (kind mariadb-proxy) under the same probe and load.
# Prints ONE JSON document on stdout (the bench's, with the hand-rolled run embedded under
# "handrolled" and the comparison in each endpoint's "bars"); progress goes to stderr.
# How to read it: bench/switchover/README.md.
#
#   bench/switchover/run.sh [N]            N switchovers per endpoint kind (default 10)
#   HANDROLLED_RUNS=5 bench/switchover/run.sh    more baseline runs (default: the script's own)
#   ENDPOINTS=proxy-sessions bench/switchover/run.sh   only some endpoint kinds
#   LOOP=10 bench/switchover/run.sh        instead: 10 switchovers + switchbacks on one pair under
#                                          load (each one's gap, lost writes); no baseline
#   LOOP=5 IDLE=40 bench/switchover/run.sh the same with 40 more connections held open and idle
#                                          through the endpoint (a pool's spare connections)
#   ENDPOINTS=mariadb-proxy bench/switchover/run.sh    MariaDB only (no PgBouncer baseline then)
#   HANDROLLED_MARIADB_RUNS=5 bench/switchover/run.sh  MariaDB baseline runs (default N)
set -euo pipefail
N="${1:-10}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
work="$(mktemp -d /tmp/teal-bench-switchover.XXXXXX)"
trap 'rm -rf "$work"' EXIT

echo "switchover: building teal and the bench (Release)" >&2
# The bench starts the built teal.dll (tests/Teal.Testing's RepoPaths), so the CLI is built too.
dotnet build "$root/src/Teal.Cli" -c Release -v quiet -nologo -clp:ErrorsOnly >&2
dotnet build "$root/bench/Teal.Bench.Switchover" -c Release -v quiet -nologo -clp:ErrorsOnly >&2
# The MariaDB kind runs the probe and its load as their own process (the baseline's, too).
dotnet build "$root/bench/Teal.Bench.Probe" -c Release -v quiet -nologo -clp:ErrorsOnly >&2

if [ -n "${LOOP:-}" ]; then
  echo "switchover: $LOOP switchovers and switchbacks on one pair" >&2
  exec dotnet "$root/bench/Teal.Bench.Switchover/bin/Release/net10.0/Teal.Bench.Switchover.dll" --loop "$LOOP" --idle "${IDLE:-0}"
fi

endpoints="${ENDPOINTS:-proxy,proxy-sessions,proxy-prepared,pgbouncer,mariadb-proxy}"
baselines=()
if [[ ",$endpoints," =~ ,(proxy|proxy-sessions|proxy-prepared|pgbouncer), ]]; then
  echo "switchover: hand-rolled PgBouncer baseline" >&2
  # shellcheck disable=SC2086 # empty means the script's default run count
  bash "$root/bench/switchover/handrolled-pgbouncer.sh" ${HANDROLLED_RUNS:-} >"$work/handrolled.json"
  baselines+=(--baseline "$work/handrolled.json")
fi
if [[ ",$endpoints," == *,mariadb-proxy,* ]]; then
  echo "switchover: hand-rolled HAProxy baseline for MariaDB" >&2
  bash "$root/bench/switchover/handrolled-haproxy-mariadb.sh" "${HANDROLLED_MARIADB_RUNS:-$N}" >"$work/handrolled-mariadb.json"
  baselines+=(--mariadb-baseline "$work/handrolled-mariadb.json")
fi

echo "switchover: Teal, $N switchovers per endpoint kind" >&2
dotnet "$root/bench/Teal.Bench.Switchover/bin/Release/net10.0/Teal.Bench.Switchover.dll" \
  --switchovers "$N" --endpoints "$endpoints" "${baselines[@]}"
