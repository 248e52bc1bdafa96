#!/usr/bin/env bash
# Replication benchmark: PostgreSQL 15 blue → 17 green on loopback.
#   - time to AVAILABLE (schema copy + initial copy + catch-up) of a pgbench scale-10 database,
#   - verify throughput (rows per second per side),
#   - green lag p50/p99 (heartbeat, sampled every 100 ms) under pgbench TPC-B, 8 clients, 60 s.
# Prints one JSON document on stdout; progress goes to stderr.
# Options pass through: --scale N --clients N --seconds N
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
dotnet build "$root/bench/Teal.Bench.Replication" -c Release -v quiet -nologo >&2
exec dotnet "$root/bench/Teal.Bench.Replication/bin/Release/net10.0/Teal.Bench.Replication.dll" "$@"
