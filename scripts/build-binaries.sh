#!/usr/bin/env bash
# Build the pinned local control plane binaries from Go modules into a cache outside
# the repository, keyed by component and version, and reuse them when present.
#
#   scripts/build-binaries.sh [--no-build] [--node]
#
# Versions come from scripts/versions.env. The cache is
#   ${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}/bin/<component>-<version>/<binary>
# Progress goes to stderr; stdout gets only shell-quoted NAME=path lines, for eval:
#   ETCD_BIN KUBE_APISERVER_BIN KUBE_CONTROLLER_MANAGER_BIN KUBE_SCHEDULER_BIN
#   KUBECTL_BIN KWOK_BIN KWOKCTL_BIN HELM_BIN
# and with --node, what the real node needs (scripts/node/node.sh): KUBELET_BIN
# KUBE_PROXY_BIN COREDNS_BIN, and the OCI archives of the images built from
# scripts/node/ (packed with umoci): PAUSE_ARCHIVE NODECHECK_ARCHIVE.
# When KUBEBUILDER_ASSETS names a folder with envtest binaries (etcd, kube-apiserver,
# kubectl), those are used instead of building them. With --no-build nothing is built:
# the script fails (exit 3) when a binary is missing.
#
# Nothing but Go modules is downloaded (the Go module proxy, through `go`).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

NO_BUILD=0
NODE=0
for arg in "$@"; do
    case "$arg" in
        --no-build) NO_BUILD=1 ;;
        --node) NODE=1 ;;
        -h | --help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "build-binaries.sh: unknown argument $arg" >&2; exit 2 ;;
    esac
done

CACHE="${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}"
BIN="$CACHE/bin"
SRC="$CACHE/src"
LOGS="$CACHE/logs"
mkdir -p "$BIN" "$SRC" "$LOGS"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-buildvcs=false -trimpath"
# Two cores: keep the compiler to that, the machine is shared.
GO_P="${MODELDEPLOY_GO_PARALLEL:-2}"

START=$SECONDS
log() { printf '[build-binaries %4ds] %s\n' "$((SECONDS - START))" "$*" >&2; }

TICKER_PID=""
start_ticker() { # $1 = what is being built; prints a line every 30 s while it runs
    local what="$1" t0=$SECONDS
    (
        # no lock, no stray sleep holding our stderr open once we are told to stop
        exec 9>&- >/dev/null
        s=""
        trap 'kill $s 2>/dev/null; exit 0' TERM
        while :; do
            sleep 30 &
            s=$!
            wait "$s"
            printf '[build-binaries %4ds] ... still building %s (%ds so far)\n' \
                "$((SECONDS - START))" "$what" "$((SECONDS - t0))" >&2
        done
    ) &
    TICKER_PID=$!
}
stop_ticker() {
    if [[ -n "$TICKER_PID" ]]; then
        kill "$TICKER_PID" 2>/dev/null || true
        wait "$TICKER_PID" 2>/dev/null || true
        TICKER_PID=""
    fi
}
trap stop_ticker EXIT

# run_logged NAME CMD...: run a build step with its output in $LOGS/NAME.log; on failure
# print the tail of that log and fail.
run_logged() {
    local name="$1"; shift
    local logf="$LOGS/$name.log"
    if ! "$@" >>"$logf" 2>&1; then
        stop_ticker
        log "FAILED: $name (log: $logf); last lines:"
        tail -n 30 "$logf" >&2
        exit 1
    fi
}

have() { [[ -x "$1" && -s "$1" ]]; }

missing() { # $1 = path; in --no-build mode, fail
    log "missing: $1"
    if [[ $NO_BUILD == 1 ]]; then exit 3; fi
    if ! command -v go >/dev/null 2>&1; then
        log "Go is not installed (needed to build $(basename "$1"); Go >= 1.26 and the Go module proxy)"
        exit 1
    fi
}

# ---------------------------------------------------------------- kubernetes
K8S_DIR="$BIN/kubernetes-$KUBERNETES_VERSION"
k8s_minor="${KUBERNETES_VERSION#v1.}"; k8s_minor="${k8s_minor%%.*}"
STAGING_VERSION="v0.${KUBERNETES_VERSION#v1.}"

prepare_k8s_module() {
    local mod="$SRC/kubernetes-$KUBERNETES_VERSION"
    if [[ -f "$mod/.ready" ]]; then echo "$mod"; return; fi
    log "resolving k8s.io/kubernetes@$KUBERNETES_VERSION (module download, first time only)"
    rm -rf "$mod"; mkdir -p "$mod"
    local gomod
    gomod="$(cd "$mod" && go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" |
        sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
    [[ -f "$gomod" ]] || { log "cannot download k8s.io/kubernetes@$KUBERNETES_VERSION"; exit 1; }
    {
        echo "module modeldeploy.local/kubernetes-build"
        echo
        echo "go 1.26.0"
        echo
        echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
        echo
        echo "replace ("
        # every staging module, replaced with its published version
        sed -n 's#^[[:space:]]*\(k8s.io/[^[:space:]]*\) => ./staging/src/.*#\t\1 => \1 '"$STAGING_VERSION"'#p' "$gomod"
        echo ")"
    } >"$mod/go.mod"
    (cd "$mod" && run_logged kubernetes-mod go get \
        "k8s.io/kubernetes/cmd/kube-apiserver@$KUBERNETES_VERSION" \
        "k8s.io/kubernetes/cmd/kube-controller-manager@$KUBERNETES_VERSION" \
        "k8s.io/kubernetes/cmd/kube-scheduler@$KUBERNETES_VERSION" \
        "k8s.io/kubernetes/cmd/kubectl@$KUBERNETES_VERSION")
    touch "$mod/.ready"
    echo "$mod"
}

k8s_module_for() { # $1 = command: the module, with that command's requirements resolved
    local mod; mod="$(prepare_k8s_module)"
    case "$1" in
        kube-apiserver | kube-controller-manager | kube-scheduler | kubectl) ;;
        *)
            if [[ ! -f "$mod/.ready-$1" ]]; then
                (cd "$mod" && run_logged kubernetes-mod go get "k8s.io/kubernetes/cmd/$1@$KUBERNETES_VERSION")
                touch "$mod/.ready-$1"
            fi
            ;;
    esac
    echo "$mod"
}

build_k8s() { # $1 = binary name (cmd/<name>)
    local name="$1" out="$K8S_DIR/$1"
    have "$out" && return 0
    missing "$out"
    local mod; mod="$(k8s_module_for "$name")"
    local ld="-s -w" p
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ld+=" -X $p.gitVersion=$KUBERNETES_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$k8s_minor"
        ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
    done
    log "building $name $KUBERNETES_VERSION (several minutes on 2 cores)"
    local t0=$SECONDS
    start_ticker "$name"
    mkdir -p "$K8S_DIR"
    (cd "$mod" && run_logged "kubernetes-$name" go build -p "$GO_P" -ldflags "$ld" \
        -o "$out.tmp" "k8s.io/kubernetes/cmd/$name")
    stop_ticker
    mv -f "$out.tmp" "$out"
    log "built $name in $((SECONDS - t0))s -> $out"
}

# ---------------------------------------------------------------- etcd
ETCD_DIR="$BIN/etcd-$ETCD_VERSION"
build_etcd() {
    local out="$ETCD_DIR/etcd"
    have "$out" && return 0
    missing "$out"
    local mod="$SRC/etcd-$ETCD_VERSION"
    if [[ ! -f "$mod/.ready" ]]; then
        log "resolving go.etcd.io/etcd/server/v3@$ETCD_VERSION"
        rm -rf "$mod"; mkdir -p "$mod"
        printf 'module modeldeploy.local/etcd-build\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' \
            "$ETCD_VERSION" >"$mod/go.mod"
        cat >"$mod/main.go" <<'EOF'
// Command etcd is the etcd server, built from the go.etcd.io/etcd/server/v3 module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
        (cd "$mod" && run_logged etcd-mod go mod tidy)
        touch "$mod/.ready"
    fi
    log "building etcd $ETCD_VERSION"
    local t0=$SECONDS
    start_ticker etcd
    mkdir -p "$ETCD_DIR"
    (cd "$mod" && run_logged etcd go build -p "$GO_P" -ldflags "-s -w" -o "$out.tmp" .)
    stop_ticker
    mv -f "$out.tmp" "$out"
    log "built etcd in $((SECONDS - t0))s -> $out"
}

# ---------------------------------------------------------------- go install helpers
go_install() { # $1 = log name, $2 = target dir, $3 = ldflags, $4 = package@version
    local name="$1" dir="$2" ld="$3" pkg="$4"
    log "building $name ($pkg)"
    local t0=$SECONDS tmp="$dir.tmp"
    start_ticker "$name"
    rm -rf "$tmp"; mkdir -p "$tmp"
    (cd "$SRC" && GOBIN="$tmp" run_logged "$name" go install -p "$GO_P" -ldflags "$ld" "$pkg")
    stop_ticker
    mkdir -p "$dir"
    mv -f "$tmp"/* "$dir"/
    rmdir "$tmp"
    log "built $name in $((SECONDS - t0))s -> $dir"
}

KWOK_DIR="$BIN/kwok-$KWOK_VERSION"
build_kwok() {
    local b
    for b in kwok kwokctl; do
        have "$KWOK_DIR/$b" && continue
        missing "$KWOK_DIR/$b"
        go_install "$b" "$KWOK_DIR" "-s -w" "sigs.k8s.io/kwok/cmd/$b@$KWOK_VERSION"
    done
}

HELM_DIR="$BIN/helm-$HELM_VERSION"
build_helm() {
    have "$HELM_DIR/helm" && return 0
    missing "$HELM_DIR/helm"
    local gomod cg maj min
    gomod="$(cd "$SRC" && go mod download -json "helm.sh/helm/v3@$HELM_VERSION" |
        sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
    # helm's Makefile derives its default Kubernetes version from its client-go version
    cg="$(sed -n 's#^[[:space:]]*k8s.io/client-go v0\.\([0-9]*\)\..*#\1#p' "$gomod" | head -n1)"
    maj=1; min="${cg:-$k8s_minor}"
    local ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
    ld+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
    ld+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=$maj"
    ld+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$min"
    ld+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=$maj"
    ld+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$min"
    go_install helm "$HELM_DIR" "$ld" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}

# ---------------------------------------------------------------- the real node (--node)
NODE_SRC="$here/node"

src_hash() { # a short hash of files: their build outputs are cached under it
    cat "$@" | sha256sum | cut -c1-12
}

# CoreDNS with only the plugins the node's DNS uses (scripts/node/coredns/main.go), built
# through a small module like etcd; the folder name follows the version and that file.
COREDNS_DIR="$BIN/coredns-$COREDNS_VERSION-$(src_hash "$NODE_SRC/coredns/main.go")"
build_coredns() {
    local out="$COREDNS_DIR/coredns"
    have "$out" && return 0
    missing "$out"
    local mod="$SRC/coredns-$COREDNS_VERSION"
    if [[ ! -f "$mod/.ready" ]] || ! cmp -s "$NODE_SRC/coredns/main.go" "$mod/main.go"; then
        log "resolving github.com/coredns/coredns@$COREDNS_VERSION"
        rm -rf "$mod"; mkdir -p "$mod"
        printf 'module modeldeploy.local/coredns-build\n\ngo 1.26.0\n\nrequire github.com/coredns/coredns %s\n' \
            "$COREDNS_VERSION" >"$mod/go.mod"
        cp "$NODE_SRC/coredns/main.go" "$mod/main.go"
        (cd "$mod" && run_logged coredns-mod go mod tidy)
        touch "$mod/.ready"
    fi
    log "building coredns $COREDNS_VERSION"
    local t0=$SECONDS
    start_ticker coredns
    mkdir -p "$COREDNS_DIR"
    (cd "$mod" && run_logged coredns go build -p "$GO_P" -ldflags "-s -w" -o "$out.tmp" .)
    stop_ticker
    mv -f "$out.tmp" "$out"
    log "built coredns in $((SECONDS - t0))s -> $out"
}

# The node's own small programs (no dependencies): built from scripts/node/<name>/main.go.
build_tool() { # $1 = name: prints the binary's path
    local name="$1" dir out
    dir="$BIN/$name-$(src_hash "$NODE_SRC/$name/main.go")"
    out="$dir/$name"
    if ! have "$out"; then
        missing "$out" >&2
        local mod="$SRC/$name"
        rm -rf "$mod"; mkdir -p "$mod" "$dir"
        printf 'module modeldeploy.local/%s\n\ngo 1.26.0\n' "$name" >"$mod/go.mod"
        cp "$NODE_SRC/$name/main.go" "$mod/main.go"
        log "building $name"
        (cd "$mod" && run_logged "$name" go build -p "$GO_P" -ldflags "-s -w" -o "$out.tmp" .)
        mv -f "$out.tmp" "$out"
    fi
    echo "$out"
}

# An OCI archive holding one static program, packed with umoci, with a tag-only reference
# (what `ctr images import --base-name` expects); the tag is the program's source hash.
NODE_IMAGES="$CACHE/node-images"
pack_image() { # $1 = name, $2 = binary, $3 = user: prints the archive's path
    local name="$1" binary="$2" user="$3" tag archive tmp
    tag="$(src_hash "$NODE_SRC/$name/main.go")"
    archive="$NODE_IMAGES/$name-$tag.tar"
    if [[ ! -s "$archive" ]]; then
        [[ $NO_BUILD == 1 ]] && { log "missing: $archive"; exit 3; }
        command -v umoci >/dev/null 2>&1 || { log "umoci is needed to pack the $name image (Debian: apt-get install umoci)"; exit 1; }
        log "packing image $name:$tag"
        mkdir -p "$NODE_IMAGES"
        tmp="$(mktemp -d "$NODE_IMAGES/.pack-$name.XXXXXX")"
        run_logged "image-$name" umoci init --layout "$tmp/oci"
        run_logged "image-$name" umoci new --image "$tmp/oci:$tag"
        run_logged "image-$name" umoci unpack --image "$tmp/oci:$tag" "$tmp/bundle"
        install -m 0755 "$binary" "$tmp/bundle/rootfs/$name"
        run_logged "image-$name" umoci repack --image "$tmp/oci:$tag" "$tmp/bundle"
        run_logged "image-$name" umoci config --image "$tmp/oci:$tag" \
            --config.entrypoint "/$name" --config.user "$user"
        run_logged "image-$name" umoci gc --layout "$tmp/oci"
        tar -C "$tmp/oci" -cf "$archive.tmp" oci-layout index.json blobs
        mv -f "$archive.tmp" "$archive"
        rm -rf "$tmp"
    fi
    echo "$archive"
}

build_node() {
    build_k8s kubelet
    build_k8s kube-proxy
    build_coredns
    local pause nodecheck
    pause="$(build_tool pause)"
    nodecheck="$(build_tool nodecheck)"
    # the sandbox image runs as nobody, like upstream's pause; nodecheck as a non-root user
    PAUSE_ARCHIVE="$(pack_image pause "$pause" 65535:65535)"
    NODECHECK_ARCHIVE="$(pack_image nodecheck "$nodecheck" 65532:65532)"
}

# ---------------------------------------------------------------- main
# One build at a time per cache (a test run and `make cluster` may race).
exec 9>"$CACHE/build.lock"
if [[ $NO_BUILD == 0 ]] && ! flock -n 9; then
    log "another build holds $CACHE/build.lock; waiting for it"
    flock 9
fi

ETCD_BIN="" KUBE_APISERVER_BIN="" KUBECTL_BIN=""
if [[ -n "${KUBEBUILDER_ASSETS:-}" && -d "${KUBEBUILDER_ASSETS}" ]]; then
    have "$KUBEBUILDER_ASSETS/etcd" && ETCD_BIN="$KUBEBUILDER_ASSETS/etcd"
    have "$KUBEBUILDER_ASSETS/kube-apiserver" && KUBE_APISERVER_BIN="$KUBEBUILDER_ASSETS/kube-apiserver"
    have "$KUBEBUILDER_ASSETS/kubectl" && KUBECTL_BIN="$KUBEBUILDER_ASSETS/kubectl"
    log "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS: using envtest's" \
        "${ETCD_BIN:+etcd }${KUBE_APISERVER_BIN:+kube-apiserver }${KUBECTL_BIN:+kubectl}"
fi

# Smallest first, so a broken toolchain shows quickly; kube-apiserver is the long one.
[[ -z "$ETCD_BIN" ]] && { build_etcd; ETCD_BIN="$ETCD_DIR/etcd"; }
build_kwok
[[ -z "$KUBECTL_BIN" ]] && { build_k8s kubectl; KUBECTL_BIN="$K8S_DIR/kubectl"; }
build_k8s kube-scheduler
build_k8s kube-controller-manager
[[ -z "$KUBE_APISERVER_BIN" ]] && { build_k8s kube-apiserver; KUBE_APISERVER_BIN="$K8S_DIR/kube-apiserver"; }
build_helm
[[ $NODE == 1 ]] && build_node

if ((SECONDS - START > 5)); then log "all binaries ready in $((SECONDS - START))s"; fi

emit() { printf '%s=%q\n' "$1" "$2"; }
emit ETCD_BIN "$ETCD_BIN"
emit KUBE_APISERVER_BIN "$KUBE_APISERVER_BIN"
emit KUBE_CONTROLLER_MANAGER_BIN "$K8S_DIR/kube-controller-manager"
emit KUBE_SCHEDULER_BIN "$K8S_DIR/kube-scheduler"
emit KUBECTL_BIN "$KUBECTL_BIN"
emit KWOK_BIN "$KWOK_DIR/kwok"
emit KWOKCTL_BIN "$KWOK_DIR/kwokctl"
emit HELM_BIN "$HELM_DIR/helm"
if [[ $NODE == 1 ]]; then
    emit KUBELET_BIN "$K8S_DIR/kubelet"
    emit KUBE_PROXY_BIN "$K8S_DIR/kube-proxy"
    emit COREDNS_BIN "$COREDNS_DIR/coredns"
    emit PAUSE_ARCHIVE "$PAUSE_ARCHIVE"
    emit NODECHECK_ARCHIVE "$NODECHECK_ARCHIVE"
fi
