#!/usr/bin/env bash
# Teal's main job, end to end on this machine: installs what Teal needs (scripts/setup.sh),
# builds it, and runs `teal demo`: a managed PostgreSQL 15 "blue" with sample data behind a Teal
# endpoint, an application writing through it, a blue/green deployment to PostgreSQL 17, verify,
# and a switchover under that load, then a summary. teal serve keeps running for the dashboard.
#   scripts/demo.sh              run the demo (data in $TEAL_DEMO_DIR, default /tmp/teal-demo)
#   scripts/demo.sh --stop       stop the demo's teal serve and its PostgreSQL servers
set -euo pipefail
cd "$(dirname "$0")/.."
teal_dll=src/Teal.Cli/bin/Release/net10.0/teal.dll

if [ "${1:-}" = "--stop" ]; then
  exec dotnet "$teal_dll" demo --stop
fi

printf '==> installing engines and tools (scripts/setup.sh)\n'
scripts/setup.sh
printf '\n==> building Teal\n'
dotnet build src/Teal.Cli -c Release -nologo -clp:ErrorsOnly
# The summary tells how to put scripts/teal on PATH for the commands that follow the demo.
TEAL_SCRIPTS="$PWD/scripts" exec dotnet "$teal_dll" demo "$@"
