#!/usr/bin/env bash
# make lint's check of the GitHub workflows (.github/workflows/): actionlint, pinned in
# scripts/versions.env, built from its Go module by scripts/go-tool.sh on first use.
#
#   scripts/actionlint.sh [ACTIONLINT ARGS...]   (run from anywhere; checks this repository)
#
# actionlint runs shellcheck over every `run:` block when shellcheck is installed (Debian:
# apt-get install shellcheck); without it those blocks are not checked, and this says so.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
# shellcheck source=versions.env
source "$here/versions.env"

BIN="$("$here/go-tool.sh" actionlint)"
log() { echo "actionlint: $*" >&2; }

cd "$root"
if ! command -v shellcheck >/dev/null 2>&1; then
    log "shellcheck is not installed: the workflows' run: blocks are not checked (apt-get install shellcheck)"
fi
"$BIN" "$@"
echo "actionlint $ACTIONLINT_VERSION: .github/workflows OK"
