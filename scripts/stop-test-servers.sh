#!/usr/bin/env bash
# Stops every PostgreSQL server left under the test directory (/tmp/teal-tests) and removes
# the directory. Fixtures already do this; this catches a test process that was killed.
set -uo pipefail
base=/tmp/teal-tests
[ -d "$base" ] || exit 0
# `teal serve` processes a killed test run left behind (their data dirs are under $base).
pkill -9 -f "serve --data-dir $base/" 2>/dev/null && echo "stop-test-servers: killed a teal serve a test left behind" >&2
left=0
for pid_file in "$base"/*/*/data/postmaster.pid "$base"/*/*/instances/*/data/postmaster.pid; do
  [ -f "$pid_file" ] || continue
  pid=$(head -n 1 "$pid_file")
  # A killed server leaves its pid file; the pid may since belong to another process. Only a
  # postmaster started on this data directory counts (and is stopped).
  data_dir=$(dirname "$pid_file")
  if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$data_dir"; then
    left=$((left + 1))
    kill -QUIT "$pid" 2>/dev/null   # SIGQUIT: immediate shutdown
  fi
done
[ "$left" -gt 0 ] && echo "stop-test-servers: stopped $left server(s) a test left behind" >&2
# Test PgBouncers (tests/Teal.Testing/PgBouncerServer.cs) keep their pid file in their directory.
bouncers=0
for pid_file in "$base"/*/*/pgbouncer.pid; do
  [ -f "$pid_file" ] || continue
  pid=$(head -n 1 "$pid_file")
  # Only if the pid still belongs to a pgbouncer: pids are reused.
  if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "pgbouncer" ]; then
    bouncers=$((bouncers + 1))
    kill -TERM "$pid" 2>/dev/null   # SIGTERM: immediate shutdown
  fi
done
[ "$bouncers" -gt 0 ] && echo "stop-test-servers: stopped $bouncers pgbouncer(s) a test left behind" >&2
sleep 0.5
rm -rf "$base"
exit 0
