#!/usr/bin/env bash
# make lint's check of the GitHub workflows (.github/workflows/): actionlint, pinned in
# scripts/versions.env, built from its Go module into the binaries cache on first use:
#   ${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}/bin/actionlint-<version>/actionlint
#
#   scripts/actionlint.sh [ACTIONLINT ARGS...]   (run from anywhere; checks this repository)
#
# actionlint runs shellcheck over every `run:` block when shellcheck is installed (Debian:
# apt-get install shellcheck); without it those blocks are not checked, and this says so.
# Nothing but the Go module proxy is used (through `go`).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
# shellcheck source=versions.env
source "$here/versions.env"

CACHE="${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}"
DIR="$CACHE/bin/actionlint-$ACTIONLINT_VERSION"
BIN="$DIR/actionlint"
MODULE=github.com/rhysd/actionlint

log() { echo "actionlint: $*" >&2; }

build() {
    command -v go >/dev/null 2>&1 ||
        { log "Go is needed to build actionlint $ACTIONLINT_VERSION (module $MODULE)"; exit 1; }
    log "building actionlint $ACTIONLINT_VERSION from its Go module (first use only, about a minute)"
    mkdir -p "$CACHE/bin" "$CACHE/logs"
    local tmp logf="$CACHE/logs/actionlint.log" t0=$SECONDS
    # a directory of our own: two first runs at once each build, and the last move wins
    tmp="$(mktemp -d "$CACHE/bin/.actionlint.XXXXXX")"
    if ! (cd "$tmp" && GOBIN="$tmp" GOTOOLCHAIN=local CGO_ENABLED=0 \
        GOFLAGS="-buildvcs=false -trimpath" \
        go install -p "${MODELDEPLOY_GO_PARALLEL:-2}" -ldflags "-s -w" \
        "$MODULE/cmd/actionlint@$ACTIONLINT_VERSION") >"$logf" 2>&1; then
        rm -rf "$tmp"
        log "the build failed (log: $logf); last lines:"
        tail -n 20 "$logf" >&2
        exit 1
    fi
    mkdir -p "$DIR"
    mv -f "$tmp/actionlint" "$BIN"
    rm -rf "$tmp"
    log "built in $((SECONDS - t0))s -> $BIN"
}

[[ -x "$BIN" && -s "$BIN" ]] || build

cd "$root"
if ! command -v shellcheck >/dev/null 2>&1; then
    log "shellcheck is not installed: the workflows' run: blocks are not checked (apt-get install shellcheck)"
fi
"$BIN" "$@"
echo "actionlint $ACTIONLINT_VERSION: .github/workflows OK"
