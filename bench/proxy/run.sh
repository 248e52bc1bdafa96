#!/usr/bin/env bash
# Proxy throughput bench (PRODUCT.md §11): pgbench -S (select-only) and TPC-B at 8 and 32
# clients against one PostgreSQL 15, five ways in the same run: direct, through Teal's proxy
# (bench/Teal.Bench.Proxy hosting ProxyManager with one endpoint), through a `teal proxy` process
# following `teal serve --endpoints external` ("teal-proxy": the same proxy, plus what its own
# process adds — heartbeats, admin API, SO_REUSEPORT), through PgBouncer (transaction pooling,
# pool >= clients) and through HAProxy (tcp mode). Prints one JSON document.
#
# TLS runs (TLS=1, the default): the same workloads again with every client on sslmode=require,
# each scenario marked "tls": true in the same JSON and its ratio taken to direct TLS. PostgreSQL
# has a server certificate (ssl = on); Teal's proxy (a second bench host, and the `teal proxy`
# process with the certificate it generates) and a second PgBouncer (client_tls_*) terminate the
# client's TLS and reach the server as SERVER_TLS says (default disable, the same for both);
# HAProxy in tcp mode passes the client's TLS through to PostgreSQL untouched (the TLS is
# PostgreSQL's, as direct). The plain runs set sslmode=disable everywhere (clients, Teal's
# endpoints, PgBouncer's server_tls_sslmode), so a server with ssl = on does not change them.
#
# Method, so that the figures mean the same thing every run:
#   - pgbench -M simple, -j 2 (the machine has 2 cores), -n (no vacuum per run), -T SETTLE + DURATION
#     seconds, of which the last DURATION are measured (TPS from pgbench -P 1, CPU, p99).
#   - Every proxy in a session of its own (setsid, or its own daemon mode): see below.
#   - PostgreSQL keeps fsync on but runs synchronous_commit=off, so TPC-B measures the path
#     through the proxy rather than the disk's flush latency.
#   - p99 latency: pgbench --log with --sampling-rate (per-transaction latency in µs, column 3),
#     all sampled transactions of a run sorted, the 99th percentile taken.
#   - For each workload and client count the four paths run back to back, in a rotating order so
#     that none always runs first on a cold cache or last on a grown history table.
#   - proxy_cpu_us_per_tx: the proxy process's user+system CPU (/proc/PID/stat) over the run,
#     per transaction. Other workers loading the machine move TPS a lot and this figure little,
#     so it is the one to compare proxies' efficiency by (0 for direct: there is no proxy).
#   - Authentication is trust on loopback for all four paths (PgBouncer needs no userlist secret).
#
# Environment: DURATION (default 20: the measured seconds of each run), SETTLE (default 15: the
#   seconds each run goes first, not measured), REPEAT (default 3: runs of every path per
#   scenario; medians compared, every run in the JSON), SCALE (default 10), CLIENTS (default "8 32"),
#   SAMPLING (default 0.1), TLS (default 1; 0 for the plain runs only), SERVER_TLS (default
#   disable; require for TLS on both legs of Teal's proxy and PgBouncer), KEEP=1 to keep the work
#   directory, OUT=file to also write the JSON, CONTROL (default 1; 0 to leave the control out).
#
# The control: a second PgBouncer, configured as the first, in the rotation as one more path
# ("pgbouncer-control") and judged by the same bar as Teal ("control" in each bar entry). Two
# identical proxies differ only by the machine's run-to-run spread, so the scenarios the control
# meets say what the bar gives a proxy exactly at PgBouncer's level in one run.
set -euo pipefail

DURATION="${DURATION:-20}"
SETTLE="${SETTLE:-15}"
REPEAT="${REPEAT:-3}"
SCALE="${SCALE:-10}"
CLIENTS="${CLIENTS:-8 32}"
SAMPLING="${SAMPLING:-0.1}"
TLS="${TLS:-1}"
CONTROL="${CONTROL:-1}"
SERVER_TLS="${SERVER_TLS:-disable}"
case "$SERVER_TLS" in disable | require) ;; *) echo "bench-proxy: error: SERVER_TLS is disable or require" >&2; exit 1 ;; esac
PGBIN="${PGBIN:-/usr/lib/postgresql/15/bin}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

log() { printf 'bench-proxy: %s\n' "$*" >&2; }
die() { printf 'bench-proxy: error: %s\n' "$*" >&2; exit 1; }

for tool in pgbench pgbouncer haproxy dotnet runuser openssl; do
  command -v "$tool" >/dev/null || die "$tool is missing (run scripts/setup.sh)"
done
[ -x "$PGBIN/postgres" ] || die "PostgreSQL 15 is missing in $PGBIN (run scripts/setup.sh)"

WORK="$(mktemp -d /tmp/teal-bench-proxy.XXXXXX)"
chmod 755 "$WORK"
RUN_AS=()
if [ "$(id -u)" -eq 0 ]; then
  # PostgreSQL and PgBouncer refuse to run as root.
  RUN_AS=(runuser -u postgres --)
  chown postgres "$WORK"
fi

free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 20000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
}

wait_port() {
  local port="$1" what="$2"
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return
    sleep 0.05
  done
  die "$what did not start listening on $port"
}

PIDS=()
cleanup() {
  for pid in "${PIDS[@]:-}"; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  done
  [ -f "$WORK/pgbouncer.pid" ] && kill "$(cat "$WORK/pgbouncer.pid")" 2>/dev/null || true
  [ -f "$WORK/pgbouncer-tls.pid" ] && kill "$(cat "$WORK/pgbouncer-tls.pid")" 2>/dev/null || true
  [ -f "$WORK/pgbouncer-control.pid" ] && kill "$(cat "$WORK/pgbouncer-control.pid")" 2>/dev/null || true
  [ -f "$WORK/pgbouncer-control-tls.pid" ] && kill "$(cat "$WORK/pgbouncer-control-tls.pid")" 2>/dev/null || true
  [ -f "$WORK/haproxy.pid" ] && kill "$(cat "$WORK/haproxy.pid")" 2>/dev/null || true
  [ -d "$WORK/pg" ] && "${RUN_AS[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true
  if [ "${KEEP:-0}" = 1 ]; then log "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

PG_PORT="$(free_port)"
TEAL_PORT="$(free_port)"
BOUNCER_PORT="$(free_port)"
HAPROXY_PORT="$(free_port)"
TEALPROC_PORT="$(free_port)"
SERVE_PORT="$(free_port)"
TEALTLS_PORT="$(free_port)"
BOUNCERTLS_PORT="$(free_port)"
CONTROL_PORT="$(free_port)"
CONTROLTLS_PORT="$(free_port)"

# A self-signed server certificate for PostgreSQL, Teal's bench host and PgBouncer (clients on
# sslmode=require check none).
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 -keyout "$WORK/server.key" -out "$WORK/server.crt" >/dev/null 2>&1 \
  || die "openssl could not make a certificate"
chmod 600 "$WORK/server.key"
[ ${#RUN_AS[@]} -eq 0 ] || chown postgres "$WORK/server.key" "$WORK/server.crt"

# --- PostgreSQL 15 ------------------------------------------------------------------------------
log "PostgreSQL 15 on $PG_PORT, pgbench scale $SCALE"
"${RUN_AS[@]}" "$PGBIN/initdb" -D "$WORK/pg" -U postgres -A trust -E UTF8 --no-sync >/dev/null
cat >>"$WORK/pg/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$WORK'
max_connections = 200
shared_buffers = 256MB
synchronous_commit = off
wal_buffers = 16MB
checkpoint_timeout = 15min
max_wal_size = 4GB
autovacuum = off
ssl = on
ssl_cert_file = '$WORK/server.crt'
ssl_key_file = '$WORK/server.key'
CONF
"${RUN_AS[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w start >/dev/null
export PGSSLMODE=disable
pgbench -h 127.0.0.1 -p "$PG_PORT" -U postgres -i -s "$SCALE" -q postgres >/dev/null 2>"$WORK/init.log" || die "pgbench -i failed: $(tail -3 "$WORK/init.log")"
psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c 'vacuum analyze' >/dev/null

# --- Teal's proxy -------------------------------------------------------------------------------
log "building Teal's proxy host"
dotnet build -c Release -v q -nologo "$ROOT/bench/Teal.Bench.Proxy/Teal.Bench.Proxy.csproj" >"$WORK/build.log" 2>&1 || die "build failed: $(tail -5 "$WORK/build.log")"
TEAL_DLL="$ROOT/bench/Teal.Bench.Proxy/bin/Release/net10.0/Teal.Bench.Proxy.dll"
# Each of Teal's processes runs in a session of its own (setsid), as PgBouncer (-d) and HAProxy
# (-D) put themselves in theirs and as a service runs. With autogroup scheduling
# (kernel.sched_autogroup_enabled, on in Debian's kernels) Linux shares the CPU between sessions
# first: a proxy left in this script's session shares one share with pgbench's threads and is
# preempted by them. Measured here before this was done: pgbench TPC-B at 32 clients, Teal
# 209-221 µs of CPU per transaction against PgBouncer's 176, 184-194 in its own session.
setsid dotnet "$TEAL_DLL" --listen "127.0.0.1:$TEAL_PORT" --target "127.0.0.1:$PG_PORT" --server-tls disable >"$WORK/teal.out" 2>"$WORK/teal.log" &
PIDS+=("$!")
TEAL_PID="$!"
wait_port "$TEAL_PORT" "Teal's proxy"
# The same host with TLS to clients, in its own process so that each path's CPU is its own.
setsid dotnet "$TEAL_DLL" --listen "127.0.0.1:$TEALTLS_PORT" --target "127.0.0.1:$PG_PORT" --server-tls "$SERVER_TLS" \
  --tls-cert "$WORK/server.crt" --tls-key "$WORK/server.key" >"$WORK/teal-tls.out" 2>"$WORK/teal-tls.log" &
PIDS+=("$!")
TEALTLS_PID="$!"
wait_port "$TEALTLS_PORT" "Teal's proxy (TLS)"

# --- `teal proxy` following `teal serve --endpoints external` --------------------------------------
log "building teal; teal serve --endpoints external and one teal proxy"
dotnet build -c Release -v q -nologo "$ROOT/src/Teal.Cli/Teal.Cli.csproj" >"$WORK/build-teal.log" 2>&1 || die "build failed: $(tail -5 "$WORK/build-teal.log")"
TEAL_CLI="$ROOT/src/Teal.Cli/bin/Release/net10.0/teal.dll"
mkdir -p "$WORK/serve"
setsid dotnet "$TEAL_CLI" serve --data-dir "$WORK/serve" --listen "127.0.0.1:$SERVE_PORT" --endpoints external >"$WORK/serve.log" 2>&1 &
PIDS+=("$!")
wait_port "$SERVE_PORT" "teal serve"
TEAL_TOKEN="$(cat "$WORK/serve/token")" TEAL_SERVER="http://127.0.0.1:$SERVE_PORT" dotnet "$TEAL_CLI" instance add bench \
  --connection "postgresql://postgres@127.0.0.1:$PG_PORT/postgres?sslmode=disable" >"$WORK/instance-add.log" 2>&1 \
  || die "teal instance add failed: $(tail -3 "$WORK/instance-add.log")"
# Plain text to the server, as the other paths' plain runs; TLS clients get the certificate the
# proxy generates at its first start.
TEAL_TOKEN="$(cat "$WORK/serve/token")" TEAL_SERVER="http://127.0.0.1:$SERVE_PORT" dotnet "$TEAL_CLI" endpoint add bench --instance bench \
  --listen "127.0.0.1:$TEALPROC_PORT" --server-tls disable >"$WORK/endpoint-add.log" 2>&1 \
  || die "teal endpoint add failed: $(tail -3 "$WORK/endpoint-add.log")"
setsid dotnet "$TEAL_CLI" proxy --data-dir "$WORK/serve" --server "http://127.0.0.1:$SERVE_PORT" --name bench --state-file "$WORK/proxy.routes.json" >"$WORK/teal-proxy.log" 2>&1 &
PIDS+=("$!")
TEALPROC_PID="$!"
wait_port "$TEALPROC_PORT" "teal proxy"

# --- PgBouncer, transaction pooling ----------------------------------------------------------------
echo '"postgres" ""' >"$WORK/userlist.txt"
cat >"$WORK/pgbouncer.ini" <<CONF
[databases]
postgres = host=127.0.0.1 port=$PG_PORT dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir = $WORK
auth_type = trust
auth_file = $WORK/userlist.txt
pool_mode = transaction
default_pool_size = 40
max_client_conn = 200
logfile = $WORK/pgbouncer.log
pidfile = $WORK/pgbouncer.pid
server_tls_sslmode = disable
admin_users = postgres
CONF
# The same with TLS to clients, in its own process.
sed -e "s/^listen_port = .*/listen_port = $BOUNCERTLS_PORT/" -e "s/pgbouncer\.\(log\|pid\)$/pgbouncer-tls.\1/" \
  -e "s/^server_tls_sslmode = .*/server_tls_sslmode = $SERVER_TLS/" "$WORK/pgbouncer.ini" >"$WORK/pgbouncer-tls.ini"
cat >>"$WORK/pgbouncer-tls.ini" <<CONF
client_tls_sslmode = require
client_tls_cert_file = $WORK/server.crt
client_tls_key_file = $WORK/server.key
CONF
# The control: the same two again, on ports and files of their own.
sed -e "s/^listen_port = .*/listen_port = $CONTROL_PORT/" -e "s/pgbouncer\.\(log\|pid\)$/pgbouncer-control.\1/" "$WORK/pgbouncer.ini" >"$WORK/pgbouncer-control.ini"
sed -e "s/^listen_port = .*/listen_port = $CONTROLTLS_PORT/" -e "s/pgbouncer-tls\.\(log\|pid\)$/pgbouncer-control-tls.\1/" "$WORK/pgbouncer-tls.ini" >"$WORK/pgbouncer-control-tls.ini"
chmod 644 "$WORK"/pgbouncer*.ini "$WORK"/userlist.txt
"${RUN_AS[@]}" pgbouncer -d "$WORK/pgbouncer.ini" >/dev/null
wait_port "$BOUNCER_PORT" "PgBouncer"
if [ "$TLS" = 1 ]; then
  "${RUN_AS[@]}" pgbouncer -d "$WORK/pgbouncer-tls.ini" >/dev/null
  wait_port "$BOUNCERTLS_PORT" "PgBouncer (TLS)"
fi
if [ "$CONTROL" = 1 ]; then
  "${RUN_AS[@]}" pgbouncer -d "$WORK/pgbouncer-control.ini" >/dev/null
  wait_port "$CONTROL_PORT" "PgBouncer (control)"
  if [ "$TLS" = 1 ]; then
    "${RUN_AS[@]}" pgbouncer -d "$WORK/pgbouncer-control-tls.ini" >/dev/null
    wait_port "$CONTROLTLS_PORT" "PgBouncer (control, TLS)"
  fi
fi

# --- HAProxy, tcp mode --------------------------------------------------------------------------
cat >"$WORK/haproxy.cfg" <<CONF
global
  maxconn 1000
  pidfile $WORK/haproxy.pid
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
frontend pg
  bind 127.0.0.1:$HAPROXY_PORT
  default_backend pg
backend pg
  server pg 127.0.0.1:$PG_PORT
CONF
haproxy -f "$WORK/haproxy.cfg" -D >/dev/null 2>"$WORK/haproxy.log"
wait_port "$HAPROXY_PORT" "HAProxy"

# --- runs ---------------------------------------------------------------------------------------
# A path name ending in -tls is the same path with the client on sslmode=require.
port_of() {
  case "$1" in
    direct | direct-tls) echo "$PG_PORT" ;; teal) echo "$TEAL_PORT" ;; teal-tls) echo "$TEALTLS_PORT" ;;
    teal-proxy | teal-proxy-tls) echo "$TEALPROC_PORT" ;; pgbouncer) echo "$BOUNCER_PORT" ;; pgbouncer-tls) echo "$BOUNCERTLS_PORT" ;;
    pgbouncer-control) echo "$CONTROL_PORT" ;; pgbouncer-control-tls) echo "$CONTROLTLS_PORT" ;;
    haproxy | haproxy-tls) echo "$HAPROXY_PORT" ;;
  esac
}

pid_of() {
  case "$1" in
    teal) echo "$TEAL_PID" ;; teal-tls) echo "$TEALTLS_PID" ;; teal-proxy | teal-proxy-tls) echo "$TEALPROC_PID" ;;
    pgbouncer) cat "$WORK/pgbouncer.pid" ;; pgbouncer-tls) cat "$WORK/pgbouncer-tls.pid" ;;
    pgbouncer-control) cat "$WORK/pgbouncer-control.pid" ;; pgbouncer-control-tls) cat "$WORK/pgbouncer-control-tls.pid" ;; haproxy | haproxy-tls) cat "$WORK/haproxy.pid" ;; *) echo "" ;;
  esac
}

sslmode_of() { case "$1" in *-tls) echo require ;; *) echo disable ;; esac; }

# CPU time (user + system, clock ticks) a process has used; 0 for "direct".
cpu_ticks() {
  local pid
  pid="$(pid_of "$1")"
  [ -n "$pid" ] || { echo 0; return; }
  awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat"
}

# PgBouncer keeps its server connections from one run to the next; every other path gets new
# backends with each pgbench run. RECONNECT (admin console) closes PgBouncer's idle ones, so that
# each of its runs starts from new backends too. Measured here before this was done (select-only
# and TPC-B at 32 clients, steady state, system-wide CPU per transaction by process): PostgreSQL's
# own CPU per transaction moved between 568 and 964 µs from run to run, far more than any proxy
# spends; back to back, TPC-B at 32 clients, Teal vs PgBouncer TPS was 0.75 with PgBouncer's pool
# kept warm and 1.05 with new backends (bench/proxy/README.md).
fresh_backends() {
  case "$1" in
    pgbouncer | pgbouncer-tls | pgbouncer-control | pgbouncer-control-tls)
      local admin=(psql -X -q -At -h 127.0.0.1 -p "$(port_of "$1")" -U postgres -d pgbouncer)
      PGSSLMODE="$(sslmode_of "$1")" "${admin[@]}" -c RECONNECT >/dev/null || die "PgBouncer's RECONNECT failed on $1"
      # Closed as they are released, idle ones at once: wait until SHOW SERVERS lists none.
      local i
      for i in $(seq 1 50); do
        [ -z "$(PGSSLMODE="$(sslmode_of "$1")" "${admin[@]}" -c 'SHOW SERVERS')" ] && return
        sleep 0.1
      done
      die "PgBouncer's server connections did not close after RECONNECT"
      ;;
  esac
}

# Prints "tps p99_ms proxy_cpu_us_per_tx" for one pgbench run, measured over its last DURATION
# seconds only: pgbench runs SETTLE + DURATION seconds and the first SETTLE are not counted.
# Every run's backends are new (fresh_backends above for PgBouncer) and start cold (catalog
# caches, and each backend's page tables for shared_buffers: direct pgbench -S at 32 clients rose
# from 7 200 to 25 000 TPS over its first 15 s here), hence the settling time.
run_one() {
  local workload="$1" clients="$2" via="$3" name="$1-$2-$3"
  local flags=()
  [ "$workload" = select-only ] && flags+=(-S)
  mkdir -p "$WORK/logs/$name"
  fresh_backends "$via"
  local start
  start=$(date +%s)
  (cd "$WORK/logs/$name" && PGSSLMODE="$(sslmode_of "$via")" exec pgbench -h 127.0.0.1 -p "$(port_of "$via")" -U postgres -n -M simple -c "$clients" -j 2 \
    -T "$((SETTLE + DURATION))" -P 1 --log --log-prefix=tx --sampling-rate="$SAMPLING" "${flags[@]}" postgres) >"$WORK/logs/$name.out" 2>&1 &
  local bench=$!
  # The proxy's own CPU per transaction: unlike TPS it barely moves when other work loads the machine.
  local cpu_before cpu_after
  sleep "$SETTLE"
  cpu_before="$(cpu_ticks "$via")"
  sleep "$DURATION"
  cpu_after="$(cpu_ticks "$via")"
  wait "$bench" || die "pgbench $name failed: $(tail -3 "$WORK/logs/$name.out")"
  # Transactions in the window: pgbench -P 1 prints each second's TPS.
  local tx tps p99 cpu_us
  tx=$(awk -v s="$SETTLE" -v d="$DURATION" '/^progress: / { t = $2 + 0; if (t > s + 0.5 && t <= s + d + 0.5) n += $4 } END { printf "%.0f", n }' "$WORK/logs/$name.out")
  [ "${tx:-0}" -gt 0 ] || die "no progress lines in pgbench output for $name"
  tps=$(awk -v n="$tx" -v d="$DURATION" 'BEGIN { printf "%.1f", n / d }')
  # Sampled transactions of the window (column 5 is the epoch second a transaction ended).
  p99=$(cat "$WORK/logs/$name"/tx.* | awk -v lo="$((start + SETTLE))" '$5 >= lo { print $3 }' | sort -n | awk '{v[NR]=$1} END {i=int(NR*0.99); if (i<1) i=1; printf "%.3f", v[i]/1000}')
  cpu_us=$(awk -v a="$cpu_before" -v b="$cpu_after" -v t="$tx" -v hz="$(getconf CLK_TCK)" 'BEGIN { if (t > 0) printf "%.2f", (b - a) * 1e6 / hz / t; else print "null" }')
  echo "$tps $p99 $cpu_us"
}

# Warm-up, unmeasured and the same for every path: fills caches and lets .NET's tiered JIT
# reach its optimized code, as it has in a long-running `teal serve`.
PATHS=(direct teal teal-proxy pgbouncer haproxy)
[ "$CONTROL" = 1 ] && PATHS+=(pgbouncer-control)
TLS_PATHS=()
[ "$TLS" = 1 ] && for base in "${PATHS[@]}"; do TLS_PATHS+=("$base-tls"); done
for via in "${PATHS[@]}" "${TLS_PATHS[@]}"; do
  PGSSLMODE="$(sslmode_of "$via")" pgbench -h 127.0.0.1 -p "$(port_of "$via")" -U postgres -n -S -M simple -c 8 -j 2 -T "${WARMUP:-3}" postgres >"$WORK/warmup-$via.out" 2>&1 || die "warm-up through $via failed"
done

# Each round starts one path later than the previous one.
# A suffix "-tls" (or none) on every path name of a round.
SUFFIXES=("")
[ "$TLS" = 1 ] && SUFFIXES+=(-tls)
order() { local r="$1" i; for i in "${!PATHS[@]}"; do printf '%s ' "${PATHS[$(((i + r) % ${#PATHS[@]}))]}"; done; }
# REPEAT runs of every path per scenario, back to back; the JSON gives each run and the median.
declare -A TPS P99 CPU TPS_RUNS P99_RUNS CPU_RUNS
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{v[NR]=$1} END {if (NR % 2) print v[(NR+1)/2]; else printf "%.2f\n", (v[NR/2] + v[NR/2+1]) / 2}'; }
round=0
for suffix in "${SUFFIXES[@]}"; do
  for workload in select-only tpcb; do
    for clients in $CLIENTS; do
      for rep in $(seq 1 "$REPEAT"); do
        for base in $(order "$round"); do
          via="$base$suffix"
          key="$workload/$clients/$via"
          log "$workload, $clients clients, $via, run $rep of $REPEAT (${SETTLE}s + ${DURATION}s measured)"
          read -r tps p99 cpu < <(run_one "$workload" "$clients" "$via")
          TPS_RUNS["$key"]+="$tps "
          P99_RUNS["$key"]+="$p99 "
          CPU_RUNS["$key"]+="$cpu "
        done
        round=$((round + 1))
      done
      for base in "${PATHS[@]}"; do
        key="$workload/$clients/$base$suffix"
        TPS["$key"]="$(median <<<"${TPS_RUNS[$key]}")"
        P99["$key"]="$(median <<<"${P99_RUNS[$key]}")"
        CPU["$key"]="$(median <<<"${CPU_RUNS[$key]}")"
      done
    done
  done
done

kill -TERM "$TEAL_PID" 2>/dev/null || true
wait "$TEAL_PID" 2>/dev/null || true
kill -TERM "$TEALTLS_PID" 2>/dev/null || true
TEAL_STATS="$(tail -1 "$WORK/teal.out" 2>/dev/null || true)"
[ -n "$TEAL_STATS" ] || TEAL_STATS=null
# Transactions Teal's proxy carried (warm-up included, as its allocation count includes it).
TEAL_TX=$(cat "$WORK"/logs/*-teal.out "$WORK"/warmup-teal.out 2>/dev/null | sed -nE 's/^number of transactions actually processed: ([0-9]+).*/\1/p' | awk '{s+=$1} END {print s+0}')
TEAL_ALLOC=$(printf '%s' "$TEAL_STATS" | sed -nE 's/.*"allocated_bytes":([0-9]+).*/\1/p')
ALLOC_PER_TX=$(awk -v a="${TEAL_ALLOC:-0}" -v t="$TEAL_TX" 'BEGIN { if (t > 0) printf "%.2f", a / t; else print "null" }')

# --- JSON ---------------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "null" }'; }
# Whether a part of the bar that the medians miss is also missed run for run: with REPEAT runs per
# path, a miss smaller than the runs' spread says "not ahead", not "behind" (the best of Teal's
# runs reached the other path's worst). Usage: beyond_spread higher-is-better TEAL_RUNS OTHER_RUNS.
beyond_spread() {
  awk -v up="$1" -v t="$2" -v o="$3" 'BEGIN {
    n = split(t, a, " "); m = split(o, b, " ")
    tmin = tmax = a[1]; for (i = 2; i <= n; i++) { if (a[i] < tmin) tmin = a[i]; if (a[i] > tmax) tmax = a[i] }
    omin = omax = b[1]; for (i = 2; i <= m; i++) { if (b[i] < omin) omin = b[i]; if (b[i] > omax) omax = b[i] }
    print (up ? tmax < omin : tmin > omax) ? "true" : "false" }'
}
# One path's medians against the bar, for a scenario key ("workload/clients"): prints its TPS
# over PgBouncer's and over HAProxy's, its CPU per transaction over PgBouncer's, and whether all three
# parts are met. Usage: judge KEY PATH SUFFIX.
judge() {
  local key="$1" via="$2$3" suffix="$3" vs_bouncer vs_haproxy cpu
  vs_bouncer="$(ratio "${TPS[$key/$via]}" "${TPS[$key/pgbouncer$suffix]}")"
  vs_haproxy="$(ratio "${TPS[$key/$via]}" "${TPS[$key/haproxy$suffix]}")"
  cpu="$(ratio "${CPU[$key/$via]}" "${CPU[$key/pgbouncer$suffix]}")"
  echo "$vs_bouncer $vs_haproxy $cpu $(awk -v a="$vs_bouncer" -v b="$vs_haproxy" -v c="$cpu" 'BEGIN { print (a >= 1 && b >= 1 && c <= 1) ? "true" : "false" }')"
}
{
  printf '{\n  "bench": "proxy",\n  "date": "%s",\n  "host_cores": %s,\n  "postgres": "%s",\n' "$(date -u +%FT%TZ)" "$(nproc)" "$("$PGBIN/postgres" --version | awk '{print $3}')"
  printf '  "method": {"duration_s": %s, "settle_s": %s, "runs_per_path": %s, "median_of_runs": true, "scale": %s, "protocol": "simple", "threads": 2, "synchronous_commit": "off", "fsync": "on", "p99": "pgbench --log, sampling %s, 99th percentile of per-transaction latency", "pgbouncer": "transaction pooling, pool 40, RECONNECT before each run (new backends, as every path)", "haproxy": "mode tcp", "control": "%s", "tls": "client sslmode=require; Teal and PgBouncer terminate it, server TLS %s; HAProxy passes it through to PostgreSQL"},\n' "$DURATION" "$SETTLE" "$REPEAT" "$SCALE" "$SAMPLING" "$([ "$CONTROL" = 1 ] && echo "a second PgBouncer configured as the first, judged by the same bar" || echo none)" "$SERVER_TLS"
  printf '  "scenarios": [\n'
  first=1
  for suffix in "${SUFFIXES[@]}"; do
    tls=false
    [ -z "$suffix" ] || tls=true
    for workload in select-only tpcb; do
      for clients in $CLIENTS; do
        direct="${TPS[$workload/$clients/direct$suffix]}"
        for base in "${PATHS[@]}"; do
          via="$base$suffix"
          [ $first = 1 ] || printf ',\n'
          first=0
          key="$workload/$clients/$via"
          printf '    {"workload": "%s", "clients": %s, "via": "%s", "tls": %s, "tps": %s, "ratio_to_direct": %s, "p99_ms": %s, "proxy_cpu_us_per_tx": %s, "runs": {"tps": [%s], "proxy_cpu_us_per_tx": [%s]}}' \
            "$workload" "$clients" "$base" "$tls" "${TPS[$key]}" "$(ratio "${TPS[$key]}" "$direct")" "${P99[$key]}" "${CPU[$key]}" \
            "$(echo ${TPS_RUNS[$key]} | tr ' ' ',')" "$(echo ${CPU_RUNS[$key]} | tr ' ' ',')"
        done
      done
    done
  done
  printf '\n  ],\n  "bar": [\n'
  first=1
  all_met=true
  misses_within=0
  misses_beyond=0
  teal_met=0
  control_met=0
  for suffix in "${SUFFIXES[@]}"; do
    tls=false
    [ -z "$suffix" ] || tls=true
    for workload in select-only tpcb; do
      for clients in $CLIENTS; do
        key="$workload/$clients"
        teal="${TPS[$key/teal$suffix]}"
        read -r vs_bouncer vs_haproxy cpu_vs_bouncer met < <(judge "$key" teal "$suffix")
        [ "$met" = true ] || all_met=false
        [ "$met" = true ] && teal_met=$((teal_met + 1))
        control=null
        if [ "$CONTROL" = 1 ]; then
          read -r c_bouncer c_haproxy c_cpu c_met < <(judge "$key" pgbouncer-control "$suffix")
          [ "$c_met" = true ] && control_met=$((control_met + 1))
          control="{\"vs_pgbouncer\": $c_bouncer, \"vs_haproxy\": $c_haproxy, \"cpu_vs_pgbouncer\": $c_cpu, \"met\": $c_met}"
        fi
        # Each missed part, told apart: behind in every run, or inside the runs' spread.
        beyond=false
        if [ "$met" = false ]; then
          { awk -v a="$vs_bouncer" 'BEGIN { exit !(a < 1) }' && [ "$(beyond_spread 1 "${TPS_RUNS[$key/teal$suffix]}" "${TPS_RUNS[$key/pgbouncer$suffix]}")" = true ]; } && beyond=true
          { awk -v a="$vs_haproxy" 'BEGIN { exit !(a < 1) }' && [ "$(beyond_spread 1 "${TPS_RUNS[$key/teal$suffix]}" "${TPS_RUNS[$key/haproxy$suffix]}")" = true ]; } && beyond=true
          { awk -v a="$cpu_vs_bouncer" 'BEGIN { exit !(a > 1) }' && [ "$(beyond_spread 0 "${CPU_RUNS[$key/teal$suffix]}" "${CPU_RUNS[$key/pgbouncer$suffix]}")" = true ]; } && beyond=true
          [ "$beyond" = true ] && misses_beyond=$((misses_beyond + 1)) || misses_within=$((misses_within + 1))
        fi
        [ $first = 1 ] || printf ',\n'
        first=0
        printf '    {"workload": "%s", "clients": %s, "tls": %s, "teal_vs_pgbouncer": %s, "teal_vs_haproxy": %s, "teal_cpu_vs_pgbouncer": %s, "teal_proxy_process_vs_in_process": %s, "met": %s, "missed_in_every_run": %s, "control": %s}' \
          "$workload" "$clients" "$tls" "$vs_bouncer" "$vs_haproxy" "$cpu_vs_bouncer" "$(ratio "${TPS[$key/teal-proxy$suffix]}" "$teal")" "$met" "$([ "$met" = true ] && echo null || echo "$beyond")" "$control"
      done
    done
  done
  printf '\n  ],\n  "bar_met": %s,\n  "bar_met_scenarios": %s,\n  "control_bar_met_scenarios": %s,\n  "bar_missed_within_run_spread": %s,\n  "bar_missed_in_every_run": %s,\n  "teal_endpoint": %s,\n  "teal_transactions": %s,\n  "teal_allocated_bytes_per_transaction": %s\n}\n' \
    "$all_met" "$teal_met" "$([ "$CONTROL" = 1 ] && echo "$control_met" || echo null)" "$misses_within" "$misses_beyond" "$TEAL_STATS" "$TEAL_TX" "$ALLOC_PER_TX"
} | tee "${OUT:-/dev/null}"
