#!/usr/bin/env bash
# Teal's main job, end to end on this machine: installs what Teal needs, builds it, starts
# `teal serve`, creates a managed PostgreSQL 15 "blue" behind a Teal endpoint, loads it with
# pgbench, creates a blue/green deployment with a PostgreSQL 17 green, verifies it, and switches
# over while pgbench keeps writing through the endpoint. Teal keeps running afterwards.
#   scripts/demo.sh              run the demo (data in $TEAL_DEMO_DIR, default /tmp/teal-demo)
#   scripts/demo.sh --stop       stop the demo's teal serve and its PostgreSQL servers
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
demo_dir=${TEAL_DEMO_DIR:-/tmp/teal-demo}
port=${TEAL_DEMO_PORT:-7400}
endpoint_port=${TEAL_DEMO_ENDPOINT_PORT:-6432}
export TEAL_SERVER="http://127.0.0.1:$port"

stop_demo() {
  pkill -f "serve --data-dir $demo_dir" 2>/dev/null || true
  for pid_file in "$demo_dir"/instances/*/data/postmaster.pid; do
    [ -f "$pid_file" ] && kill -QUIT "$(head -n 1 "$pid_file")" 2>/dev/null || true
  done
}

if [ "${1:-}" = "--stop" ]; then
  stop_demo
  echo "demo: stopped; data left in $demo_dir (remove it with rm -rf $demo_dir)"
  exit 0
fi

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "installing engines and tools (scripts/setup.sh)"
scripts/setup.sh
step "building Teal"
dotnet build src/Teal.Cli -c Release -nologo -clp:ErrorsOnly
teal() { dotnet "$root/src/Teal.Cli/bin/Release/net10.0/teal.dll" "$@"; }

step "starting teal serve on $TEAL_SERVER (data in $demo_dir)"
stop_demo
rm -rf "$demo_dir"
mkdir -p "$demo_dir"
# Managed servers run as a non-root user; their files must be reachable by it.
chmod 755 "$demo_dir"
nohup dotnet "$root/src/Teal.Cli/bin/Release/net10.0/teal.dll" serve --data-dir "$demo_dir" --listen "127.0.0.1:$port" \
  > "$demo_dir/serve.log" 2>&1 &
for _ in $(seq 1 100); do
  curl -fsS "$TEAL_SERVER/healthz" > /dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "$TEAL_SERVER/healthz" > /dev/null || { echo "teal serve did not start; see $demo_dir/serve.log" >&2; exit 1; }
export TEAL_TOKEN
TEAL_TOKEN=$(cat "$demo_dir/token")

step "teal engine list"
teal engine list

step "creating blue: a managed PostgreSQL 15 behind the endpoint 127.0.0.1:$endpoint_port"
teal instance create app --engine postgres --version 15 --endpoint "127.0.0.1:$endpoint_port"
teal instance list

step "loading blue with pgbench (scale 5) and an application role"
blue_url=$(teal instance url app)
# Applications log in as their own role; Teal copies roles (with their password hashes) to
# green, so the same credentials work after the switchover.
psql -q "$blue_url" -c "CREATE ROLE app_user LOGIN PASSWORD 'app-demo-password'"
pgbench -i -q -s 5 "$blue_url"
# pgbench_history has no primary key; it is insert-only, so REPLICA IDENTITY FULL is enough
# (without it Teal refuses the create and names this exact fix).
psql -q "$blue_url" -c "ALTER TABLE pgbench_history REPLICA IDENTITY FULL" \
  -c "GRANT ALL ON ALL TABLES IN SCHEMA public TO app_user" -c "GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO app_user"
endpoint_url="postgresql://app_user:app-demo-password@127.0.0.1:$endpoint_port/postgres"

step "creating the blue/green deployment: green is PostgreSQL 17"
teal create upgrade --source app --target-engine-version 17 --wait
teal show upgrade

step "verifying blue and green row by row"
teal verify upgrade

step "switching over while pgbench writes through the endpoint"
# -j 4: pgbench connects synchronously; with one thread per client a connect held during the
# switchover stalls only that client, as with an application's connection pool.
pgbench -n -C -c 4 -j 4 -T 20 "$endpoint_url" > "$demo_dir/pgbench.log" 2>&1 &
bench=$!
sleep 5
teal check upgrade
teal switchover upgrade --wait
wait $bench || true
tail -n 12 "$demo_dir/pgbench.log"
teal show upgrade
teal events upgrade | tail -n 15
teal instance list

cat <<MSG

Done. Blue (PostgreSQL 15) is now 'app-old1' and fenced (no role but Teal's own can log in;
\`teal instance unfence app-old1\` gives the logins back); 'app' is the PostgreSQL 17 green,
and the endpoint 127.0.0.1:$endpoint_port sends clients there.

  export TEAL_SERVER=$TEAL_SERVER TEAL_TOKEN=\$(cat $demo_dir/token)
  dotnet $root/src/Teal.Cli/bin/Release/net10.0/teal.dll show upgrade
  PGPASSWORD=app-demo-password psql "postgresql://app_user@127.0.0.1:$endpoint_port/postgres"

teal serve keeps running (log: $demo_dir/serve.log); stop everything with scripts/demo.sh --stop.
MSG
