# Helpers both hand-rolled baselines use (sourced; OS_USER set by the caller).

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# Servers refuse to run as root: as root, run them as the servers' OS user.
as_server_user() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u "$OS_USER" -- "$@"; else "$@"; fi
}

# A port nothing listens on now (the caller retries if another process takes it first).
free_port() {
  local port
  while :; do
    port=$(( 20000 + RANDOM % 20000 ))
    (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
}
