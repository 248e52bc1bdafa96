#!/usr/bin/env bash
# The MariaDB baseline of PRODUCT.md §11: a blue/green switchover behind HAProxy as a careful
# operator scripts it with the mariadb client and HAProxy's runtime API, measured the way Teal's
# own MariaDB switchover is measured (bench/Teal.Bench.Switchover, kind mariadb-proxy).
#
#   bench/switchover/handrolled-haproxy-mariadb.sh [RUNS]     (default 3; prints JSON on stdout)
#
# Per run: two fresh MariaDB 10.11 servers on loopback (blue, green; binlog in ROW format, GTID
# strict mode, the same durability settings as Teal's test servers), green replicating from blue
# by GTID (MASTER_USE_GTID=slave_pos) and read_only, and HAProxy in tcp mode in front with blue
# active and green in maintenance. On blue, database `app` with the probe table and the load's
# tables, and the application account app_user (SELECT, INSERT, UPDATE, DELETE on app.*; no SUPER);
# all of it replicates to green. Then the probe writer (bench/Teal.Bench.Probe --mysql, a commit
# every 5 ms) and its load (--load 8: 8 more connections running START TRANSACTION; UPDATE;
# INSERT; COMMIT back to back) run through HAProxy, and the switchover goes:
#   fence    on blue: SET GLOBAL read_only = ON — every account without SUPER / READ ONLY ADMIN
#            can no longer write (statements and COMMITs fail with 1290). MariaDB 10.11's
#            read_only does NOT stop accounts with SUPER, so the operator also locks every such
#            account but their own (ALTER USER … ACCOUNT LOCK, unlogged so the lock does not
#            replicate) and kills their sessions. The application's own sessions are not killed
#            here: they stay on blue and have their writes refused until HAProxy cuts them.
#   catchup  blue's final GTID (@@gtid_binlog_pos, final once read_only returned: it waits for
#            commits in progress), then on green SELECT MASTER_GTID_WAIT(that, 30).
#   open     on green: STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = OFF. Done before the
#            repoint (the careful order): green takes no client before it accepts writes, so the
#            first connections to land there do not fail with read_only.
#   repoint  one line to HAProxy's stats socket (level admin):
#            set server db/green state ready; set server db/blue state maint;
#            shutdown sessions server db/blue
#            — new connections go to green, the ones still on blue are cut and reconnect.
# Not done, as a script of this kind usually does not: checking AUTO_INCREMENT counters on green
# (row-based replication moves them with the rows).
# Reported per run: the longest gap between two acknowledged probe commits (over the whole load
# and over the switchover's window, fence start to repoint answered), client errors (probe and
# load), lost writes (acknowledged probe numbers missing on green), and each phase's duration.
# Needs: scripts/setup.sh done (mariadb-server, haproxy), jq, socat, the .NET SDK; runs as root
# (servers as the mysql OS user).
set -euo pipefail

RUNS="${1:-3}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OS_USER="${TEAL_MARIADB_OS_USER:-mysql}"
LOAD_CLIENTS=8
LOAD_SECONDS_BEFORE=3
LOAD_SECONDS_AFTER=3

log() { printf 'handrolled-mariadb: %s\n' "$*" >&2; }
die() { printf 'handrolled-mariadb: error: %s\n' "$*" >&2; exit 1; }
# shellcheck source=bench/switchover/common.sh
source "$(dirname "$0")/common.sh"

for tool in jq socat haproxy mariadb mariadb-install-db; do
  command -v "$tool" >/dev/null || die "$tool is missing (scripts/setup.sh; jq and socat: apt-get install jq socat)"
done
MARIADBD=/usr/sbin/mariadbd
[ -x "$MARIADBD" ] || die "mariadbd is missing (scripts/setup.sh)"

WORK="$(mktemp -d /tmp/teal-bench-handrolled-mariadb.XXXXXX)"
chmod 755 "$WORK"
PIDS=()
stop_servers() {
  for f in "$WORK"/*/mysqld.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  # mariadbd removes its pid file when it has shut down.
  for _ in $(seq 100); do compgen -G "$WORK/*/mysqld.pid" >/dev/null || break; sleep 0.1; done
}
cleanup() {
  for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
  [ -f "$WORK/haproxy.pid" ] && kill "$(cat "$WORK/haproxy.pid")" 2>/dev/null || true
  stop_servers
  rm -rf "$WORK"
}
trap cleanup EXIT

log "building the probe writer"
dotnet build "$ROOT/bench/Teal.Bench.Probe" -c Release -nologo -clp:ErrorsOnly -o "$WORK/probe" >/dev/null

APP_PW="$(head -c 18 /dev/urandom | base64 | tr '+/' 'xy')"
REPL_PW="$(head -c 18 /dev/urandom | base64 | tr '+/' 'xy')"

start_server() { # name port server-id
  local name=$1 port=$2 id=$3 dir="$WORK/$1"
  mkdir -p "$dir/data" "$dir/tmp"
  [ "$(id -u)" -eq 0 ] && chown -R "$OS_USER:" "$dir"
  as_server_user mariadb-install-db --no-defaults --datadir="$dir/data" --tmpdir="$dir/tmp" \
    --auth-root-authentication-method=normal --skip-test-db --skip-name-resolve >"$dir/install.log" 2>&1 \
    || die "mariadb-install-db for $name failed: $(tail -n 5 "$dir/install.log")"
  as_server_user setsid -f "$MARIADBD" --no-defaults --datadir="$dir/data" --tmpdir="$dir/tmp" \
    --port="$port" --bind-address=127.0.0.1 --socket="$dir/mysqld.sock" --pid-file="$dir/mysqld.pid" \
    --log-error="$dir/error.log" --server-id="$id" --log-bin=binlog --relay-log=relay \
    --binlog-format=ROW --binlog-row-image=FULL --log-slave-updates=ON --gtid-strict-mode=ON \
    --skip-name-resolve --max-connections=500 --character-set-server=utf8mb4 \
    --innodb-flush-log-at-trx-commit=2 --sync-binlog=0 --innodb-buffer-pool-size=64M \
    --performance-schema=OFF --innodb-doublewrite=0 </dev/null >/dev/null 2>&1
  for _ in $(seq 300); do
    mariadb --socket="$dir/mysqld.sock" -u root -e "SELECT 1" >/dev/null 2>&1 && return
    # The machine is shared: another process may take the port between free_port and the bind.
    grep -q "Address already in use" "$dir/error.log" 2>/dev/null && { rm -rf "$dir"; return 1; }
    sleep 0.1
  done
  die "$name did not start: $(tail -n 5 "$dir/error.log")"
}

start_server_retrying() { # name server-id; prints the port it got
  local port
  for _ in 1 2 3 4 5; do
    port=$(free_port)
    start_server "$1" "$port" "$2" >&2 && { echo "$port"; return; }
    log "$1: port $port was taken meanwhile, another one"
  done
  die "$1 did not start on any of 5 ports"
}

# Root over the server's socket (root@localhost, no password, from mariadb-install-db).
sql() { local name=$1; shift; mariadb --socket="$WORK/$name/mysqld.sock" -u root -N -B "$@"; }

haproxy_cmd() { echo "$1" | socat stdio "unix-connect:$WORK/haproxy.sock"; }

start_haproxy() { # port blue-port green-port
  cat >"$WORK/haproxy.cfg" <<EOF
global
  maxconn 1000
  pidfile $WORK/haproxy.pid
  stats socket $WORK/haproxy.sock mode 600 level admin
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
frontend mariadb
  bind 127.0.0.1:$1
  default_backend db
backend db
  server blue 127.0.0.1:$2
  server green 127.0.0.1:$3 disabled
EOF
  haproxy -f "$WORK/haproxy.cfg" -D >/dev/null 2>"$WORK/haproxy.log"
}

start_haproxy_retrying() { # blue-port green-port; prints the port it got
  local port
  for _ in 1 2 3 4 5; do
    port=$(free_port)
    start_haproxy "$port" "$1" "$2" && { echo "$port"; return; }
    # free_port only tries to connect: a port no one listens on may still be some connection's own.
    grep -q "Address already in use" "$WORK/haproxy.log" || die "HAProxy did not start: $(cat "$WORK/haproxy.log")"
    log "HAProxy: port $port was taken meanwhile, another one"
  done
  die "HAProxy did not start on any of 5 ports"
}

run_once() { # run number; prints one JSON object
  local run=$1
  local blue_port green_port haproxy_port
  blue_port=$(start_server_retrying blue 1)
  green_port=$(start_server_retrying green 2)

  # Local housekeeping stays out of the binlogs (green's own GTIDs would break strict mode).
  for side in blue green; do
    sql "$side" -e "SET SESSION sql_log_bin = 0; DROP USER IF EXISTS ''@'localhost'; DROP USER IF EXISTS ''@'$(hostname)'"
  done
  sql blue -e "CREATE USER repl@'%' IDENTIFIED BY '$REPL_PW'; GRANT REPLICATION SLAVE ON *.* TO repl@'%'"
  sql green -e "SET GLOBAL read_only = ON;
    CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = $blue_port, MASTER_USER = 'repl', MASTER_PASSWORD = '$REPL_PW',
      MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1, MASTER_HEARTBEAT_PERIOD = 1;
    START SLAVE"
  sql blue -e "CREATE DATABASE app;
    CREATE TABLE app.probe (n BIGINT PRIMARY KEY, at DATETIME(6) NOT NULL DEFAULT NOW(6)) ENGINE=InnoDB;
    CREATE TABLE app.load_accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL DEFAULT 0) ENGINE=InnoDB;
    CREATE TABLE app.load_history (id BIGINT AUTO_INCREMENT PRIMARY KEY, account INT NOT NULL, delta INT NOT NULL, at DATETIME(6) NOT NULL DEFAULT NOW(6)) ENGINE=InnoDB;
    INSERT INTO app.load_accounts (id) SELECT seq FROM app.seq_1_to_1000;
    CREATE USER app_user@'%' IDENTIFIED BY '$APP_PW';
    GRANT SELECT, INSERT, UPDATE, DELETE ON app.* TO app_user@'%'"
  local setup_pos
  setup_pos=$(sql blue -e "SELECT @@gtid_binlog_pos")
  [ "$(sql green -e "SELECT MASTER_GTID_WAIT('$setup_pos', 60)")" = "0" ] || die "green did not replicate the setup: $(sql green -e 'SHOW SLAVE STATUS\G' | grep -i error)"

  haproxy_port=$(start_haproxy_retrying "$blue_port" "$green_port")
  log "run $run: MariaDB blue on $blue_port, green on $green_port, HAProxy on $haproxy_port"
  for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$haproxy_port") 2>/dev/null && break; sleep 0.05; done

  log "run $run: probe and load through HAProxy, then the switchover"
  local probe_out="$WORK/probe_$run.json"
  dotnet "$WORK/probe/Teal.Bench.Probe.dll" --mysql --load "$LOAD_CLIENTS" \
    "Server=127.0.0.1;Port=$haproxy_port;User ID=app_user;Password=$APP_PW;Database=app;Connection Timeout=30;Default Command Timeout=60" \
    5 "$probe_out" >/dev/null </dev/null &
  local probe_pid=$!
  PIDS+=("$probe_pid")
  # The probe is a .NET program: on a loaded machine it can take seconds to start. The
  # switchover must begin only once it is writing, or its gap would go unseen.
  local waited=0
  until [ "$(sql blue -e "SELECT COUNT(*) > 0 FROM app.probe")" = "1" ]; do
    sleep 0.1; waited=$((waited + 1))
    [ "$waited" -lt 600 ] || die "the probe writer did not commit within 60 s"
  done
  sleep "$LOAD_SECONDS_BEFORE"

  local t0 t1 t2 t3 t4 pos
  t0=$(now_ms)
  # fence: read_only, then the accounts read_only does not stop (SUPER or READ ONLY ADMIN, but
  # root@localhost, this session's) locked and their sessions killed: three mariadb calls, unlogged.
  sql blue -e "SET SESSION sql_log_bin = 0; SET GLOBAL read_only = ON;
    SELECT CONCAT('ALTER USER ', QUOTE(g.User), '@', QUOTE(g.Host), ' ACCOUNT LOCK;')
      FROM mysql.global_priv g
      WHERE (CAST(COALESCE(JSON_VALUE(g.Priv, '\$.access'), '0') AS UNSIGNED) & (32768 | 8589934592)) <> 0
        AND NOT (g.User = 'root' AND g.Host = 'localhost') AND g.User <> ''
        AND COALESCE(JSON_VALUE(g.Priv, '\$.account_locked'), 'false') NOT IN ('true', '1')" >"$WORK/lock.sql"
  # -f: an account listed in mysql.global_priv that ALTER USER does not know (root@HOSTNAME
  # after --skip-name-resolve) must not stop the others from being locked.
  sql blue -f -e "SET SESSION sql_log_bin = 0; SOURCE $WORK/lock.sql;
    SELECT CONCAT('KILL CONNECTION ', p.ID, ';') FROM information_schema.PROCESSLIST p
      JOIN mysql.global_priv g ON g.User = p.USER
      WHERE p.ID <> CONNECTION_ID() AND p.USER <> 'root'
        AND (CAST(COALESCE(JSON_VALUE(g.Priv, '\$.access'), '0') AS UNSIGNED) & (32768 | 8589934592)) <> 0" 2>/dev/null | grep '^KILL' >"$WORK/kill.sql" || true
  [ -s "$WORK/kill.sql" ] && { sql blue -f -e "SOURCE $WORK/kill.sql" >/dev/null 2>&1 || true; }
  t1=$(now_ms)
  # catchup: blue's final GTID, executed on green.
  pos=$(sql blue -e "SELECT @@gtid_binlog_pos")
  [ "$(sql green -e "SELECT MASTER_GTID_WAIT('$pos', 30)")" = "0" ] || die "green did not reach blue's final GTID $pos within 30 s"
  t2=$(now_ms)
  # open: green leaves replication and accepts writes.
  sql green -e "STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = OFF"
  t3=$(now_ms)
  # repoint: HAProxy sends new connections to green and cuts the ones still on blue.
  haproxy_cmd "set server db/green state ready; set server db/blue state maint; shutdown sessions server db/blue" >/dev/null
  t4=$(now_ms)

  sleep "$LOAD_SECONDS_AFTER"
  kill -TERM "$probe_pid"
  wait "$probe_pid" || true

  # Lost writes: acknowledged probe numbers that green does not have.
  jq -r '.acks[].n' "$probe_out" | sort -u >"$WORK/acked_$run.txt"
  sql green -e "SELECT n FROM app.probe" | sort -u >"$WORK/green_$run.txt"
  local lost
  lost=$(comm -23 "$WORK/acked_$run.txt" "$WORK/green_$run.txt" | wc -l)
  local blue_refuses=false
  if ! mariadb -h 127.0.0.1 -P "$blue_port" -u app_user -p"$APP_PW" -e "INSERT INTO app.probe (n) VALUES (-1)" >/dev/null 2>&1; then blue_refuses=true; fi

  kill "$(cat "$WORK/haproxy.pid")" 2>/dev/null || true
  rm -f "$WORK/haproxy.pid"
  stop_servers
  rm -rf "$WORK/blue" "$WORK/green"

  jq -n --argjson run "$run" --slurpfile probe "$probe_out" --argjson lost "$lost" --argjson blueRefuses "$blue_refuses" \
    --argjson fence $((t1 - t0)) --argjson catchup $((t2 - t1)) --argjson open $((t3 - t2)) --argjson repoint $((t4 - t3)) --argjson total $((t4 - t0)) \
    --argjson t0 "$t0" --argjson t4 "$t4" \
    '{run: $run,
      longestGapMs: $probe[0].summary.longestGapMs,
      # The write pause at the switchover: the longest gap between consecutive acknowledged
      # commits whose interval overlaps fence (t0) .. repoint answered (t4), as Teal is measured.
      switchoverGapMs: ($probe[0].acks | [range(1; length) as $i | select(.[$i].atMs > $t0 and .[$i - 1].atMs < $t4) | .[$i].atMs - .[$i - 1].atMs] | max),
      probeAcked: $probe[0].summary.acked,
      probeCoveredSwitchover: (($probe[0].acks | length) > 0 and $probe[0].acks[0].atMs < $t0 and $probe[0].acks[-1].atMs > $t4),
      errors: ($probe[0].summary.errors + ($probe[0].load.errors // 0)),
      probeErrors: $probe[0].summary.errors,
      loadErrors: ($probe[0].load.errors // 0),
      loadCommitted: ($probe[0].load.committed // 0),
      loadErrorSamples: ($probe[0].load.errorSamples // []),
      lostWrites: $lost,
      oldBlueRefusesWrites: $blueRefuses,
      phasesMs: {fence: $fence, catchup: $catchup, open: $open, repoint: $repoint, total: $total}}'
}

results="$WORK/results.jsonl"
: >"$results"
for run in $(seq 1 "$RUNS"); do
  run_once "$run" >>"$results"
done

jq -s '{
  bench: "handrolled-haproxy-mariadb",
  runs: length,
  runsWithProbeCoverage: (map(select(.probeCoveredSwitchover)) | length),
  switchoverGapMaxMs: (map(.switchoverGapMs) | max),
  switchoverGapMedianMs: (map(.switchoverGapMs) | sort | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end),
  longestGapMs: (map(.longestGapMs) | max),
  medianGapMs: (map(.longestGapMs) | sort | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end),
  errors: (map(.errors) | add),
  lostWrites: (map(.lostWrites) | add),
  phasesMedianMs: (. as $runs | [.[0].phasesMs | keys_unsorted[]] | map({key: ., value: ([$runs[].phasesMs[.]] | sort | .[length / 2 | floor])}) | from_entries),
  switchovers: .
}' "$results"
