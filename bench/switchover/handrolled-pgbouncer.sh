#!/usr/bin/env bash
# The baseline of PRODUCT.md §11: a switchover through PgBouncer as a careful operator scripts it
# with psql, measured the way Teal's own switchover is measured.
#
#   bench/switchover/handrolled-pgbouncer.sh [RUNS]        (default 3; prints JSON on stdout)
#
# Setup (once): PostgreSQL 15 (blue) and 17 (green) on loopback, PgBouncer in transaction pooling
# in front. Per run, a fresh database pair: pgbench scale 8 (as many branches as clients, so TPC-B
# does not queue on one branch row; Teal's bench uses the same) plus a probe table on blue, copied to
# green by logical replication (publication/subscription). Then pgbench TPC-B with 8 clients and
# the probe writer (bench/Teal.Bench.Probe, a commit every 5 ms) run through PgBouncer, and the
# switchover goes:
#   pause     PAUSE appdb                       (returns when transactions in flight ended)
#   fence     ALTER SYSTEM SET default_transaction_read_only = on; pg_reload_conf() on blue
#   catchup   wait until blue's slot is confirmed up to blue's pg_current_wal_lsn()
#   sequences setval() on green for every sequence of blue
#   repoint   rewrite appdb's line in the ini, RELOAD, check SHOW DATABASES
#   resume    RESUME appdb
# Reported per run: the longest gap between two acknowledged probe commits, client errors
# (probe and pgbench), lost writes (acknowledged probe rows missing on green), duplicates, and
# each phase's duration. Needs: scripts/setup.sh done, jq, the .NET SDK; runs as root (servers
# and PgBouncer as the postgres user) or as a normal user.
set -euo pipefail

RUNS="${1:-3}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PG15=/usr/lib/postgresql/15/bin
ENGINES="${TEAL_ENGINES_DIR:-/opt/teal/engines}"
PG17="$(ls -d "$ENGINES"/postgres-17*/bin 2>/dev/null | sort -V | tail -n 1)"
OS_USER="${TEAL_OS_USER:-postgres}"
PGBENCH_SCALE=8
LOAD_SECONDS_BEFORE=3
LOAD_SECONDS_AFTER=3

log() { printf 'handrolled: %s\n' "$*" >&2; }
die() { printf 'handrolled: error: %s\n' "$*" >&2; exit 1; }
# shellcheck source=bench/switchover/common.sh
source "$(dirname "$0")/common.sh"

command -v jq >/dev/null || die "jq is needed (apt-get install jq)"
[ -x "$PG15/postgres" ] || die "PostgreSQL 15 is missing (scripts/setup.sh)"
[ -n "$PG17" ] && [ -x "$PG17/postgres" ] || die "PostgreSQL 17 is missing under $ENGINES (scripts/setup.sh)"
[ -x /usr/sbin/pgbouncer ] || die "pgbouncer is missing (scripts/setup.sh)"

WORK="$(mktemp -d /tmp/teal-bench-handrolled.XXXXXX)"
chmod 755 "$WORK"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
  [ -f "$WORK/pgbouncer.pid" ] && kill "$(cat "$WORK/pgbouncer.pid")" 2>/dev/null || true
  [ -d "$WORK/blue" ] && as_server_user "$PG15/pg_ctl" -D "$WORK/blue" -m immediate stop >/dev/null 2>&1 || true
  [ -d "$WORK/green" ] && as_server_user "$PG17/pg_ctl" -D "$WORK/green" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- build the probe writer ----------------------------------------------------------------------
log "building the probe writer"
dotnet build "$ROOT/bench/Teal.Bench.Probe" -c Release -nologo -clp:ErrorsOnly -o "$WORK/probe" >/dev/null

# --- servers ------------------------------------------------------------------------------------
SUPER_PW="$(head -c 18 /dev/urandom | base64 | tr '+/' 'xy')"
APP_PW="$(head -c 18 /dev/urandom | base64 | tr '+/' 'xy')"
ADMIN_PW="$(head -c 18 /dev/urandom | base64 | tr '+/' 'xy')"
BLUE_PORT=$(free_port); GREEN_PORT=$(free_port); PGB_PORT=$(free_port)
echo "$SUPER_PW" > "$WORK/pwfile"
[ "$(id -u)" -eq 0 ] && chown -R "$OS_USER:" "$WORK"

start_server() { # name bin port
  local name=$1 bin=$2 port=$3
  as_server_user "$bin/initdb" -D "$WORK/$name" -U postgres --pwfile="$WORK/pwfile" --auth=scram-sha-256 --encoding=UTF8 --no-locale >/dev/null
  cat >>"$WORK/$name/postgresql.conf" <<EOF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK'
wal_level = logical
max_connections = 200
shared_buffers = 128MB
fsync = off
full_page_writes = off
max_replication_slots = 10
max_wal_senders = 10
EOF
  as_server_user "$bin/pg_ctl" -D "$WORK/$name" -l "$WORK/$name.log" -w start >/dev/null
}
log "starting PostgreSQL 15 (blue, port $BLUE_PORT) and 17 (green, port $GREEN_PORT)"
start_server blue "$PG15" "$BLUE_PORT"
start_server green "$PG17" "$GREEN_PORT"

export PGPASSWORD="$SUPER_PW"
blue()  { "$PG15/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$BLUE_PORT" -U postgres "$@"; }
green() { "$PG15/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$GREEN_PORT" -U postgres "$@"; }
admin() { PGPASSWORD="$ADMIN_PW" "$PG15/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PGB_PORT" -U teal_admin -d pgbouncer "$@"; }

for side in blue green; do
  $side -d postgres -c "CREATE ROLE app LOGIN PASSWORD '$APP_PW'; GRANT pg_read_all_data, pg_write_all_data TO app"
done

# --- PgBouncer ----------------------------------------------------------------------------------
cat >"$WORK/pgbouncer.ini" <<EOF
[databases]
appdb = host=127.0.0.1 port=$BLUE_PORT dbname=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGB_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $WORK/userlist.txt
admin_users = teal_admin
pool_mode = transaction
max_client_conn = 200
default_pool_size = 20
query_wait_timeout = 120
logfile = $WORK/pgbouncer.log
pidfile = $WORK/pgbouncer.pid
EOF
printf '"app" "%s"\n"teal_admin" "%s"\n' "$APP_PW" "$ADMIN_PW" >"$WORK/userlist.txt"
[ "$(id -u)" -eq 0 ] && chown "$OS_USER:" "$WORK/pgbouncer.ini" "$WORK/userlist.txt"
as_server_user /usr/sbin/pgbouncer -d -q "$WORK/pgbouncer.ini"
for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$PGB_PORT") 2>/dev/null && break; sleep 0.05; done

# The operator's repoint: the one line, edited in place (sed writes a new file and renames it).
repoint() { # port dbname
  sed -i -E "s|^appdb = .*$|appdb = host=127.0.0.1 port=$1 dbname=$2|" "$WORK/pgbouncer.ini"
  admin -c "RELOAD"
  admin -At -c "SHOW DATABASES" | grep -q "^appdb|127.0.0.1|$1|$2|" || die "PgBouncer did not take the new appdb line"
}

# --- one switchover -----------------------------------------------------------------------------
run_once() { # run number; prints one JSON object
  local run=$1 db="bench_$1"
  log "run $run: preparing $db on blue and green"
  blue -d postgres -c "CREATE DATABASE $db"
  green -d postgres -c "CREATE DATABASE $db"
  "$PG15/pgbench" -i -s "$PGBENCH_SCALE" -q -h 127.0.0.1 -p "$BLUE_PORT" -U postgres "$db" >/dev/null 2>&1
  blue -d "$db" -c "CREATE TABLE probe (id bigserial PRIMARY KEY, n bigint, at timestamptz DEFAULT now())"
  "$PG15/pg_dump" -s -h 127.0.0.1 -p "$BLUE_PORT" -U postgres "$db" | green -d "$db" >/dev/null
  blue -d "$db" -c "CREATE PUBLICATION pub_$run FOR ALL TABLES"
  green -d "$db" -c "CREATE SUBSCRIPTION sub_$run CONNECTION 'host=127.0.0.1 port=$BLUE_PORT user=postgres password=$SUPER_PW dbname=$db' PUBLICATION pub_$run"
  until [ "$(green -d "$db" -At -c "SELECT count(*) FROM pg_subscription_rel WHERE srsubstate <> 'r'")" = "0" ]; do sleep 0.2; done
  repoint "$BLUE_PORT" "$db"

  log "run $run: load through PgBouncer, then the switchover"
  local probe_out="$WORK/probe_$run.json" pgbench_out="$WORK/pgbench_$run.log"
  PGPASSWORD="$APP_PW" "$PG15/pgbench" -n -c 8 -j 2 -T $((LOAD_SECONDS_BEFORE + LOAD_SECONDS_AFTER + 3)) \
    -h 127.0.0.1 -p "$PGB_PORT" -U app appdb >"$pgbench_out" 2>&1 &
  local pgbench_pid=$!
  PIDS+=("$pgbench_pid")
  dotnet "$WORK/probe/Teal.Bench.Probe.dll" "Host=127.0.0.1;Port=$PGB_PORT;Username=app;Password=$APP_PW;Database=appdb;Timeout=30;Command Timeout=60" 5 "$probe_out" >/dev/null </dev/null &
  local probe_pid=$!
  PIDS+=("$probe_pid")
  # The probe is a .NET program: on a loaded machine it can take seconds to start. The
  # switchover must begin only once it is writing, or its gap would go unseen.
  local waited=0
  until [ "$(blue -d "$db" -At -c "SELECT count(*) > 0 FROM probe")" = "t" ]; do
    sleep 0.1; waited=$((waited + 1))
    [ "$waited" -lt 600 ] || die "the probe writer did not commit within 60 s"
  done
  sleep "$LOAD_SECONDS_BEFORE"

  local t0 t1 t2 t3 t4 t5 t6 lsn
  t0=$(now_ms)
  admin -c "PAUSE appdb"
  t1=$(now_ms)
  blue -d "$db" -c "ALTER SYSTEM SET default_transaction_read_only = on" -c "SELECT pg_reload_conf()" >/dev/null
  t2=$(now_ms)
  lsn=$(blue -d "$db" -At -c "SELECT pg_current_wal_lsn()")
  blue -d "$db" -c "DO \$\$ BEGIN
      WHILE (SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'sub_$run') < '$lsn'::pg_lsn LOOP
        PERFORM pg_sleep(0.005);
      END LOOP;
    END \$\$"
  t3=$(now_ms)
  blue -d "$db" -At -c "SELECT format('SELECT setval(%L, %s, %L);', quote_ident(schemaname) || '.' || quote_ident(sequencename), coalesce(last_value, 1), last_value IS NOT NULL) FROM pg_sequences" \
    | green -d "$db" >/dev/null
  t4=$(now_ms)
  repoint "$GREEN_PORT" "$db"
  t5=$(now_ms)
  admin -c "RESUME appdb"
  t6=$(now_ms)

  sleep "$LOAD_SECONDS_AFTER"
  kill -TERM "$probe_pid"
  wait "$probe_pid" || true
  wait "$pgbench_pid" || true

  # Lost writes: acknowledged probe numbers that green does not have.
  jq -r '.acks[].n' "$probe_out" >"$WORK/acked_$run.txt"
  [ "$(id -u)" -eq 0 ] && chmod 644 "$WORK/acked_$run.txt"
  local lost duplicates
  lost=$(green -d "$db" -At -c "CREATE TEMP TABLE acked (n bigint)" -c "\\copy acked FROM '$WORK/acked_$run.txt'" \
    -c "SELECT count(*) FROM acked a WHERE NOT EXISTS (SELECT 1 FROM probe p WHERE p.n = a.n)")
  duplicates=$(green -d "$db" -At -c "SELECT count(*) FROM (SELECT n FROM probe GROUP BY n HAVING count(*) > 1) d")
  local pgbench_failed pgbench_aborted
  pgbench_failed=$(sed -nE 's/^number of failed transactions: ([0-9]+).*/\1/p' "$pgbench_out"); pgbench_failed=${pgbench_failed:-0}
  pgbench_aborted=$(grep -c 'aborted' "$pgbench_out" || true)

  # Back to a writable blue for the next run; the subscription goes (its slot on blue with it).
  blue -d postgres -c "ALTER SYSTEM RESET default_transaction_read_only" -c "SELECT pg_reload_conf()" >/dev/null
  green -d "$db" -c "DROP SUBSCRIPTION sub_$run"

  jq -n --argjson run "$run" --slurpfile probe "$probe_out" \
    --argjson lost "$lost" --argjson duplicates "$duplicates" \
    --argjson pgbenchFailed "$pgbench_failed" --argjson pgbenchAborted "$pgbench_aborted" \
    --argjson pause $((t1 - t0)) --argjson fence $((t2 - t1)) --argjson catchup $((t3 - t2)) \
    --argjson sequences $((t4 - t3)) --argjson repoint $((t5 - t4)) --argjson resume $((t6 - t5)) --argjson total $((t6 - t0)) \
    --argjson t0 "$t0" --argjson t6 "$t6" \
    --arg tps "$(sed -nE 's/^tps = ([0-9.]+).*/\1/p' "$pgbench_out" | head -n 1)" \
    '{run: $run,
      longestGapMs: $probe[0].summary.longestGapMs,
      # The write pause at the switchover: the longest gap between consecutive acknowledged
      # commits whose interval overlaps PAUSE (t0) .. RESUME answered (t6), as Teal is measured.
      switchoverGapMs: ($probe[0].acks | [range(1; length) as $i | select(.[$i].atMs > $t0 and .[$i - 1].atMs < $t6) | .[$i].atMs - .[$i - 1].atMs] | max),
      probeAcked: $probe[0].summary.acked,
      # The gap counts only if the probe acknowledged writes before PAUSE and after RESUME.
      probeCoveredSwitchover: (($probe[0].acks | length) > 0 and $probe[0].acks[0].atMs < $t0 and $probe[0].acks[-1].atMs > $t6),
      errors: ($probe[0].summary.errors + $pgbenchFailed + $pgbenchAborted),
      probeErrors: $probe[0].summary.errors, pgbenchFailed: $pgbenchFailed, pgbenchAborted: $pgbenchAborted,
      lostWrites: $lost, duplicates: $duplicates,
      pgbenchTps: ($tps | tonumber? // null),
      phasesMs: {pause: $pause, fence: $fence, catchup: $catchup, sequences: $sequences, repoint: $repoint, resume: $resume, total: $total}}'
}

results="$WORK/results.jsonl"
: >"$results"
for run in $(seq 1 "$RUNS"); do
  run_once "$run" >>"$results"
done

jq -s '{
  bench: "handrolled-pgbouncer",
  runs: length,
  runsWithProbeCoverage: (map(select(.probeCoveredSwitchover)) | length),
  switchoverGapMaxMs: (map(.switchoverGapMs) | max),
  switchoverGapMedianMs: (map(.switchoverGapMs) | sort | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end),
  longestGapMs: (map(.longestGapMs) | max),
  medianGapMs: (map(.longestGapMs) | sort | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end),
  errors: (map(.errors) | add),
  lostWrites: (map(.lostWrites) | add),
  duplicates: (map(.duplicates) | add),
  phasesMedianMs: (. as $runs | [.[0].phasesMs | keys_unsorted[]] | map({key: ., value: ([$runs[].phasesMs[.]] | sort | .[length / 2 | floor])}) | from_entries),
  switchovers: .
}' "$results"
