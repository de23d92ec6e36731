#!/usr/bin/env bash
# The gRPC load generator of the server benchmark's grpc section: ghz, pinned in
# scripts/versions.env, built from its Go module into the binaries cache on first use:
#   ${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}/bin/ghz-<version>/ghz
#
#   scripts/ghz.sh     prints the binary's path (progress goes to stderr)
#
# Nothing but the Go module proxy is used (through `go`).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

CACHE="${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}"
DIR="$CACHE/bin/ghz-$GHZ_VERSION"
BIN="$DIR/ghz"
MODULE=github.com/bojand/ghz

log() { echo "ghz: $*" >&2; }

build() {
    command -v go >/dev/null 2>&1 ||
        { log "Go is needed to build ghz $GHZ_VERSION (module $MODULE)"; exit 1; }
    log "building ghz $GHZ_VERSION from its Go module (first use only, a minute or two)"
    mkdir -p "$CACHE/bin" "$CACHE/logs"
    local tmp logf="$CACHE/logs/ghz.log" t0=$SECONDS
    # a directory of our own: two first runs at once each build, and the last move wins
    tmp="$(mktemp -d "$CACHE/bin/.ghz.XXXXXX")"
    if ! (cd "$tmp" && GOBIN="$tmp" GOTOOLCHAIN=local CGO_ENABLED=0 \
        GOFLAGS="-buildvcs=false -trimpath" \
        nice -n 19 go install -p "${MODELDEPLOY_GO_PARALLEL:-2}" -ldflags "-s -w" \
        "$MODULE/cmd/ghz@$GHZ_VERSION") >"$logf" 2>&1; then
        rm -rf "$tmp"
        log "the build failed (log: $logf); last lines:"
        tail -n 20 "$logf" >&2
        exit 1
    fi
    mkdir -p "$DIR"
    mv -f "$tmp/ghz" "$BIN"
    rm -rf "$tmp"
    log "built in $((SECONDS - t0))s -> $BIN"
}

[[ -x "$BIN" && -s "$BIN" ]] || build
echo "$BIN"
