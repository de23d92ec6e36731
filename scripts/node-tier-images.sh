#!/usr/bin/env bash
# The images the node tier (tests/node) runs besides the operator and the server:
#   modeldeploy-prometheus:<PROMETHEUS_VERSION>  Prometheus with Kubernetes service discovery,
#       built from its Go module at the version scripts/versions.env pins (tagged with that
#       module version, e.g. v0.316.0 for Prometheus 3.16.0) with only the kubernetes, file
#       and http discovery plugins
#   modeldeploy-metrics-server:<METRICS_SERVER_VERSION>  metrics-server, built from its Go module
#       at the pinned version: the resource metrics API HorizontalPodAutoscalers read
#   modeldeploy-loadgen:<project version>  test_images/loadgen: in-cluster load and files
# Each is one static Go binary that test_images/NAME/Dockerfile copies into a FROM-scratch
# image, so the same Dockerfile builds with buildah here and with Docker in users' CI.
#
#   scripts/node-tier-images.sh [--when-possible]
#       buildah, no Docker daemon and no registry (scripts/images.sh runs this at its end):
#       OCI archives next to make images' (images/NAME-TAG.tar, reference TAG) and one line
#       each in images/manifest.tsv, which the real node imports (cluster.sh import-images)
#   scripts/node-tier-images.sh --docker
#       docker build, tagged local/NAME:TAG (kind stores them as docker.io/local/NAME:TAG,
#       the names the node tier uses by default); prints the references, one a line
#   scripts/node-tier-images.sh --binaries
#       only the binaries; prints NAME_BIN=path lines
#
# Cache (${MODELDEPLOY_CACHE:-~/.cache/modeldeploy}): bin/prometheus-<version>-<hash>/,
# bin/metrics-server-<version>/, bin/loadgen-<hash>/, src/prometheus-<version>/ and
# src/metrics-server-<version>/ (the wrapper modules), images/context/NAME/
# (build contexts), and buildah's storage shared with scripts/images.sh. Needs Go; nothing
# but Go modules is downloaded. With --when-possible, a machine without Go skips with one
# line (unless CI=true), as scripts/images.sh does.
set -euo pipefail
shopt -s inherit_errexit

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$here")
# shellcheck source=versions.env
source "$here/versions.env"
CACHE=${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}
OUT=$CACHE/images
STORE=$CACHE/buildah
SRC=$CACHE/src
BIN=$CACHE/bin
LOGS=$CACHE/logs

PROMETHEUS_MODULE=github.com/prometheus/prometheus
# Every service discovery plugin out but Kubernetes (file and http are always built in).
PROMETHEUS_TAGS=remove_all_sd,enable_kubernetes_sd
METRICS_SERVER_MODULE=sigs.k8s.io/metrics-server

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-buildvcs=false -trimpath"
GO_P=${MODELDEPLOY_GO_PARALLEL:-2}

log() { echo "node-tier-images: $*" >&2; }
die() {
    log "$*"
    exit 1
}

# run_logged LOG COMMAND...: output to LOG; its tail on stderr when the command fails.
run_logged() {
    local logfile=$1
    shift
    if ! "$@" >>"$logfile" 2>&1; then
        tail -n 30 "$logfile" >&2
        die "$1 failed; full log: $logfile"
    fi
}

hash_of() { cat "$@" | sha256sum | cut -c1-12; }

project_version() {
    sed -n 's/^version = "\([^"]*\)"$/\1/p' "$ROOT/pyproject.toml" | head -n1
}

module_field() { # $1 = module@version, $2 = field of `go mod download -json`
    (cd "$SRC" && go mod download -json "$1") | sed -n 's/^[[:space:]]*"'"$2"'": "\(.*\)",\{0,1\}$/\1/p'
}

# The module's own replace and exclude directives as `go mod edit` flags: `go install
# module@version` refuses a module that has any, so a wrapper module repeats them.
directive_flags() { # $1 = the module's go.mod
    local json=$SRC/.wrapped-gomod.json
    go mod edit -json "$1" >"$json"
    python3 - "$json" <<'EOF'
import json
import sys

mod = json.load(open(sys.argv[1]))


def ref(m):
    return m["Path"] + ("@" + m["Version"] if m.get("Version") else "")


for e in mod.get("Exclude") or []:
    print(f"-exclude={e['Path']}@{e['Version']}")
for r in mod.get("Replace") or []:
    if not r["New"].get("Version"):
        sys.exit(f"{ref(r['Old'])} is replaced by a folder of the module's own tree")
    print(f"-replace={ref(r['Old'])}={ref(r['New'])}")
EOF
}

# wrapper_module NAME MODULE VERSION PACKAGE: prints the directory of a module that requires
# MODULE@VERSION with its directives, ready to `go build` PACKAGE
wrapper_module() {
    local name=$1 module=$2 version=$3 package=$4 mod=$SRC/$1-$3 gomod flags
    if [[ -f $mod/.ready ]]; then
        echo "$mod"
        return 0
    fi
    log "resolving $module@$version (module download, first time only)"
    rm -rf "$mod"
    mkdir -p "$mod"
    gomod=$(module_field "$module@$version" GoMod)
    [[ -f $gomod ]] || die "cannot download $module@$version"
    printf 'module modeldeploy.local/%s-build\n\ngo 1.26.0\n\nrequire %s %s\n' \
        "$name" "$module" "$version" >"$mod/go.mod"
    flags=$(directive_flags "$gomod") || die "cannot mirror the directives of $gomod"
    if [[ -n $flags ]]; then
        # shellcheck disable=SC2086 # one flag a line, none with spaces
        (cd "$mod" && go mod edit $flags)
    fi
    (cd "$mod" && run_logged "$LOGS/$name-mod.log" go get "$package@$version")
    touch "$mod/.ready"
    echo "$mod"
}

prometheus_release() { # the Prometheus version the module holds (its VERSION file)
    local dir
    dir=$(module_field "$PROMETHEUS_MODULE@$PROMETHEUS_VERSION" Dir)
    [[ -s $dir/VERSION ]] || die "no VERSION file in $PROMETHEUS_MODULE@$PROMETHEUS_VERSION"
    tr -d '[:space:]' <"$dir/VERSION"
}

PROMETHEUS_DIR=$BIN/prometheus-$PROMETHEUS_VERSION-$(echo "$PROMETHEUS_TAGS" | sha256sum | cut -c1-12)
build_prometheus() {
    local out=$PROMETHEUS_DIR/prometheus mod release ld started p=github.com/prometheus/common/version
    [[ -x $out ]] && return 0
    mod=$(wrapper_module prometheus "$PROMETHEUS_MODULE" "$PROMETHEUS_VERSION" "$PROMETHEUS_MODULE/cmd/prometheus")
    release=$(prometheus_release)
    ld="-s -w -X $p.Version=$release -X $p.Revision=$PROMETHEUS_VERSION -X $p.Branch=HEAD"
    ld+=" -X $p.BuildUser=modeldeploy -X $p.BuildDate=19700101-00:00:00"
    log "building prometheus $release ($PROMETHEUS_MODULE@$PROMETHEUS_VERSION, tags $PROMETHEUS_TAGS; several minutes the first time)"
    started=$SECONDS
    mkdir -p "$PROMETHEUS_DIR"
    (cd "$mod" && run_logged "$LOGS/prometheus.log" go build -p "$GO_P" -tags "$PROMETHEUS_TAGS" \
        -ldflags "$ld" -o "$out.tmp" "$PROMETHEUS_MODULE/cmd/prometheus")
    mv -f "$out.tmp" "$out"
    log "built prometheus in $((SECONDS - started)) s -> $out"
}

METRICS_SERVER_DIR=$BIN/metrics-server-$METRICS_SERVER_VERSION
build_metrics_server() {
    local out=$METRICS_SERVER_DIR/metrics-server mod ld started p=k8s.io/client-go/pkg/version
    [[ -x $out ]] && return 0
    mod=$(wrapper_module metrics-server "$METRICS_SERVER_MODULE" "$METRICS_SERVER_VERSION" "$METRICS_SERVER_MODULE/cmd/metrics-server")
    # the version it reports (as its own Makefile sets it)
    ld="-s -w -X $p.gitVersion=$METRICS_SERVER_VERSION -X $p.gitCommit=$METRICS_SERVER_VERSION"
    ld+=" -X $p.buildDate=1970-01-01T00:00:00Z"
    log "building metrics-server $METRICS_SERVER_VERSION ($METRICS_SERVER_MODULE; a few minutes the first time)"
    started=$SECONDS
    mkdir -p "$METRICS_SERVER_DIR"
    (cd "$mod" && run_logged "$LOGS/metrics-server.log" go build -p "$GO_P" -ldflags "$ld" \
        -o "$out.tmp" "$METRICS_SERVER_MODULE/cmd/metrics-server")
    mv -f "$out.tmp" "$out"
    log "built metrics-server in $((SECONDS - started)) s -> $out"
}

LOADGEN_SRC=$ROOT/test_images/loadgen
LOADGEN_DIR=$BIN/loadgen-$(hash_of "$LOADGEN_SRC/main.go" "$LOADGEN_SRC/go.mod")
build_loadgen() {
    local out=$LOADGEN_DIR/loadgen
    [[ -x $out ]] && return 0
    log "building loadgen"
    mkdir -p "$LOADGEN_DIR"
    (cd "$LOADGEN_SRC" && run_logged "$LOGS/loadgen.log" go build -p "$GO_P" -ldflags "-s -w" -o "$out.tmp" .)
    mv -f "$out.tmp" "$out"
}

build_binaries() {
    command -v go >/dev/null 2>&1 || die "Go is needed to build the node tier's images (Prometheus, metrics-server and loadgen)"
    mkdir -p "$SRC" "$BIN" "$LOGS"
    # one build at a time (make images and a test run may race); the other then reuses it
    exec 8>"$BIN/.node-tier-images.lock"
    if ! flock --nonblock 8; then
        log "waiting for another build of Prometheus, metrics-server and loadgen to finish"
        flock 8
    fi
    build_loadgen
    build_prometheus
    build_metrics_server
    exec 8>&-
}

# context NAME BINARY: a build context holding only the binary (hard-linked when possible)
context() {
    local dir=$OUT/context/$1
    rm -rf "$dir"
    mkdir -p "$dir"
    ln "$2" "$dir/$(basename "$2")" 2>/dev/null || cp "$2" "$dir/"
    echo "$dir"
}

bah() { buildah --root "$STORE/root" --runroot "$STORE/runroot" --storage-driver overlay "$@"; }

# buildah keeps a blob-info cache under /var/lib/containers whatever --root says: remove
# what this run created there (scripts/images.sh does the same when it runs this).
host_leftovers=()
clean_host_paths() {
    local path
    for path in "${host_leftovers[@]}"; do [[ -e $path ]] && rm -rf "$path"; done
    return 0
}

# buildah_image NAME TAG BINARY VERSION: builds localhost/modeldeploy-NAME:TAG (VERSION in
# its labels), exports its archive when it changed; prints the manifest line
buildah_image() {
    local name=$1 tag=$2 binary=$3 version=$4 ctx id archive=$OUT/modeldeploy-$1-$2.tar
    ctx=$(context "$name" "$binary")
    run_logged "$STORE/logs/$name.log" bah build --layers --pull=never \
        --file "$ROOT/test_images/$name/Dockerfile" --build-arg "VERSION=$version" \
        --tag "localhost/modeldeploy-$name:$tag" "$ctx"
    id=$(bah images --noheading --no-trunc --format '{{.ID}}' "localhost/modeldeploy-$name:$tag" | head -n1)
    if [[ -s $archive && -f $OUT/manifest.tsv ]] &&
        awk -F'\t' -v a="$archive" -v i="$id" '$3 == a && $5 == i {f=1} END {exit !f}' "$OUT/manifest.tsv"; then
        log "$archive is up to date"
    else
        rm -f "$archive.partial"
        # the tag alone as reference: ctr images import --base-name needs it
        bah push --quiet "localhost/modeldeploy-$name:$tag" "oci-archive:$archive.partial:$tag" >/dev/null
        mv "$archive.partial" "$archive"
        log "wrote $archive ($(du -h "$archive" | cut -f1))"
    fi
    log "modeldeploy-$name:$tag: $(bah images --noheading --format '{{.Size}}' "localhost/modeldeploy-$name:$tag" | head -n1) unpacked"
    printf '%s\t%s\t%s\t%s\t%s\n' "modeldeploy-$name" "$tag" "$archive" "$(stat -c %s "$archive")" "$id"
}

# Replaces the manifest's lines of these images, keeping every other line.
update_manifest() { # $@ = manifest lines
    local line names=()
    for line in "$@"; do names+=("${line%%$'\t'*}"); done
    {
        if [[ -f $OUT/manifest.tsv ]]; then
            awk -F'\t' -v names="${names[*]}" 'BEGIN {split(names, n, " "); for (i in n) drop[n[i]]=1}
                !($1 in drop)' "$OUT/manifest.tsv"
        fi
        printf '%s\n' "$@"
    } >"$OUT/manifest.tsv.partial"
    mv "$OUT/manifest.tsv.partial" "$OUT/manifest.tsv"
}

with_buildah() {
    local version lines=() path
    command -v buildah >/dev/null 2>&1 || die "buildah is missing (scripts/images.sh installs it; Debian: apt-get install buildah)"
    build_binaries
    version=$(project_version)
    mkdir -p "$OUT" "$STORE/root" "$STORE/runroot" "$STORE/tmp" "$STORE/logs"
    export TMPDIR=$STORE/tmp
    # scripts/images.sh holds the storage's lock while it runs this
    if [[ -z ${MODELDEPLOY_IMAGES_LOCK_HELD:-} ]]; then
        exec 9>"$STORE/lock"
        flock 9
        for path in /var/lib/containers /var/lib/containers/cache; do
            [[ -e $path ]] || host_leftovers+=("$path")
        done
        trap clean_host_paths EXIT
    fi
    # tags an older pin or version left behind
    bah images --noheading --format '{{.Name}}:{{.Tag}}' | while read -r ref; do
        case $ref in
            localhost/modeldeploy-prometheus:"$PROMETHEUS_VERSION" | localhost/modeldeploy-loadgen:"$version") ;;
            localhost/modeldeploy-metrics-server:"$METRICS_SERVER_VERSION") ;;
            localhost/modeldeploy-prometheus:* | localhost/modeldeploy-loadgen:*) bah rmi "$ref" >/dev/null || true ;;
            localhost/modeldeploy-metrics-server:*) bah rmi "$ref" >/dev/null || true ;;
        esac
    done
    lines+=("$(buildah_image prometheus "$PROMETHEUS_VERSION" "$PROMETHEUS_DIR/prometheus" "$(prometheus_release)")")
    lines+=("$(buildah_image metrics-server "$METRICS_SERVER_VERSION" "$METRICS_SERVER_DIR/metrics-server" "$METRICS_SERVER_VERSION")")
    lines+=("$(buildah_image loadgen "$version" "$LOADGEN_DIR/loadgen" "$version")")
    update_manifest "${lines[@]}"
}

with_docker() {
    local version ref
    command -v docker >/dev/null 2>&1 || die "docker is missing (without Docker, run this without --docker: buildah)"
    build_binaries
    version=$(project_version)
    for spec in "prometheus:$PROMETHEUS_VERSION:$PROMETHEUS_DIR/prometheus:$(prometheus_release)" \
        "metrics-server:$METRICS_SERVER_VERSION:$METRICS_SERVER_DIR/metrics-server:$METRICS_SERVER_VERSION" \
        "loadgen:$version:$LOADGEN_DIR/loadgen:$version"; do
        IFS=: read -r name tag binary label <<<"$spec"
        ref=local/modeldeploy-$name:$tag
        log "docker build $ref"
        docker build --quiet --file "$ROOT/test_images/$name/Dockerfile" --build-arg "VERSION=$label" \
            --tag "$ref" "$(context "$name" "$binary")" >&2
        echo "$ref"
    done
}

main() {
    case "${1:-}" in
        --docker) with_docker ;;
        --binaries)
            build_binaries
            printf 'PROMETHEUS_BIN=%q\nMETRICS_SERVER_BIN=%q\nLOADGEN_BIN=%q\n' "$PROMETHEUS_DIR/prometheus" \
                "$METRICS_SERVER_DIR/metrics-server" "$LOADGEN_DIR/loadgen"
            ;;
        --when-possible | "")
            if [[ ${1:-} == --when-possible && ${CI:-} != true ]] && ! command -v go >/dev/null 2>&1; then
                log "skipped: no Go to build Prometheus, metrics-server and loadgen; the node tests that need them will skip too"
                return 0
            fi
            with_buildah
            ;;
        *) die "unknown argument $1 (--when-possible, --docker or --binaries)" ;;
    esac
}

main "$@"
