#!/usr/bin/env bash
# The Go tools of the repository's scripts, pinned in scripts/versions.env and built from
# their Go modules into the binaries cache on first use:
#   ${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}/bin/<tool>-<version>/<tool>
#
#   scripts/go-tool.sh actionlint   make lint's check of the GitHub workflows
#   scripts/go-tool.sh ghz          the benchmark's gRPC load generator (grpc section)
#   scripts/go-tool.sh vegeta       its open-loop, constant-rate HTTP one (mirror section)
#
# Prints the binary's path (progress goes to stderr). Nothing but the Go module proxy is
# used (through `go`).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

TOOL="${1:?usage: go-tool.sh actionlint|ghz|vegeta}"
case "$TOOL" in
    actionlint) VERSION=$ACTIONLINT_VERSION PACKAGE=github.com/rhysd/actionlint/cmd/actionlint ;;
    ghz) VERSION=$GHZ_VERSION PACKAGE=github.com/bojand/ghz/cmd/ghz ;;
    vegeta) VERSION=$VEGETA_VERSION PACKAGE=github.com/tsenart/vegeta/v12 ;;
    *) echo "go-tool.sh: unknown tool $TOOL (actionlint, ghz or vegeta)" >&2; exit 2 ;;
esac
CACHE="${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}"
DIR="$CACHE/bin/$TOOL-$VERSION"
BIN="$DIR/$TOOL"

log() { echo "$TOOL: $*" >&2; }

build() {
    command -v go >/dev/null 2>&1 ||
        { log "Go is needed to build $TOOL $VERSION ($PACKAGE)"; exit 1; }
    log "building $TOOL $VERSION from its Go module (first use only, a minute or two)"
    mkdir -p "$CACHE/bin" "$CACHE/logs"
    local tmp logf="$CACHE/logs/$TOOL.log" t0=$SECONDS
    # a directory of our own: two first runs at once each build, and the last move wins
    tmp="$(mktemp -d "$CACHE/bin/.$TOOL.XXXXXX")"
    if ! (cd "$tmp" && GOBIN="$tmp" GOTOOLCHAIN=local CGO_ENABLED=0 \
        GOFLAGS="-buildvcs=false -trimpath" \
        nice -n 19 go install -p "${MODELDEPLOY_GO_PARALLEL:-2}" -ldflags "-s -w" \
        "$PACKAGE@$VERSION") >"$logf" 2>&1; then
        rm -rf "$tmp"
        log "the build failed (log: $logf); last lines:"
        tail -n 20 "$logf" >&2
        exit 1
    fi
    mkdir -p "$DIR"
    mv -f "$tmp/$TOOL" "$BIN"
    rm -rf "$tmp"
    log "built in $((SECONDS - t0))s -> $BIN"
}

[[ -x "$BIN" && -s "$BIN" ]] || build
echo "$BIN"
