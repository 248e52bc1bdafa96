#!/usr/bin/env bash
# Replication benchmark: PostgreSQL 15 blue → 17 green on loopback.
#   - a large table (--large-rows, default 20 M rows, about 3 GB) plus pgbench scale 10, created twice
#     in the same run: PostgreSQL's subscription copy (copy parallelism 1) and Teal's parallel copy
#     (--copy-parallelism N, default one per core): copy MB/s of the large table and time to AVAILABLE,
#   - the first verify's rows per second per side, on each green,
#   - verify throughput (rows per second per side),
#   - green lag p50/p99 (heartbeat, sampled every 100 ms) under pgbench TPC-B, 8 clients, 60 s.
# Prints one JSON document on stdout; progress goes to stderr.
# Options pass through: --scale N --clients N --seconds N --large-rows N --copy-parallelism N
# Quick run: bench/replication/run.sh --large-rows 2000000 --seconds 10
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
dotnet build "$root/bench/Teal.Bench.Replication" -c Release -v quiet -nologo >&2
exec dotnet "$root/bench/Teal.Bench.Replication/bin/Release/net10.0/Teal.Bench.Replication.dll" "$@"
