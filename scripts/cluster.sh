#!/usr/bin/env bash
# A local Kubernetes cluster for tests and the demo.
#
#   scripts/cluster.sh up          start it (idempotent); the LAST line on stdout is the
#                                  kubeconfig path, everything else goes to stderr
#   scripts/cluster.sh down        stop it and remove its state (idempotent)
#   scripts/cluster.sh kubeconfig  print the kubeconfig path of a running cluster
#   scripts/cluster.sh status      say which cluster would be / is used
#   scripts/cluster.sh import-images [NAME=ARCHIVE ...]
#                                  import OCI archives (default: those make images built)
#                                  into the real node's containerd (idempotent)
#   scripts/cluster.sh node ARGS   scripts/node/node.sh ARGS for this cluster (env, stop ...)
#
# Which cluster, in order of preference:
#   1. MODELDEPLOY_KUBECONFIG=<path>: that cluster, used as is (never created or deleted);
#   2. kind, when docker and kind are installed and `docker info` answers;
#   3. local processes started by `kwokctl --runtime binary`: etcd, kube-apiserver,
#      kube-controller-manager, kube-scheduler and kwok with two fake nodes, from the
#      binaries that scripts/build-binaries.sh builds (or finds) in the cache; plus, where
#      the machine can run one (root on Linux with the kernel features), a real node
#      (scripts/node/node.sh: containerd, kubelet, kube-proxy, CoreDNS).
# MODELDEPLOY_CLUSTER_RUNTIME=kind|binary forces 2 or 3. MODELDEPLOY_REAL_NODE=0 leaves the
# real node out, =1 requires it (fails when it cannot start), auto (default) adds it when
# the machine can run it and no other cluster holds it.
#
# Environment: MODELDEPLOY_CLUSTER_NAME (default modeldeploy), MODELDEPLOY_CACHE
# (default ~/.cache/modeldeploy), KUBEBUILDER_ASSETS (envtest binaries, used if present).
# Gateway API standard CRDs (version in scripts/versions.env) are installed in every
# cluster this script starts, from the sigs.k8s.io/gateway-api module's own files.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
# shellcheck source=node/network.env
source "$here/node/network.env"

NAME="${MODELDEPLOY_CLUSTER_NAME:-modeldeploy}"
CACHE="${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}"
STATE="$CACHE/clusters/$NAME"          # our own bookkeeping for this cluster
export KWOK_WORKDIR="$CACHE/kwok"       # kwokctl's work dir (never ~/.kwok)
KWOK_CLUSTER_DIR="$KWOK_WORKDIR/clusters/$NAME"
NODES=("$NAME-node-0" "$NAME-node-1")
read -r -a FAKE_POD_CIDR <<<"$FAKE_POD_CIDRS"   # one per fake node
REAL_NODE="${MODELDEPLOY_REAL_NODE:-auto}"

T0=$SECONDS
log() { printf '[cluster %s %3ds] %s\n' "$NAME" "$((SECONDS - T0))" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ "$NAME" =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || die "bad cluster name '$NAME' (lowercase, digits, '-')"

kind_works() {
    command -v kind >/dev/null 2>&1 && command -v docker >/dev/null 2>&1 &&
        timeout 10 docker info >/dev/null 2>&1
}

chosen_runtime() {
    if [[ -n "${MODELDEPLOY_KUBECONFIG:-}" ]]; then echo external; return; fi
    case "${MODELDEPLOY_CLUSTER_RUNTIME:-}" in
        kind | binary) echo "$MODELDEPLOY_CLUSTER_RUNTIME"; return ;;
        "" | auto) ;;
        *) die "MODELDEPLOY_CLUSTER_RUNTIME must be kind, binary or auto" ;;
    esac
    # a cluster of this name that already exists keeps its runtime
    if [[ -f "$STATE/runtime" ]]; then cat "$STATE/runtime"; return; fi
    if kind_works; then echo kind; else echo binary; fi
}

# ------------------------------------------------------------------ binaries
load_binaries() {
    local out
    out="$("$here/build-binaries.sh" "$@")" || return $?
    eval "$out"
    export PATH="$(dirname "$KUBECTL_BIN"):$PATH"
    export KWOK_KUBECTL_BINARY="$KUBECTL_BIN"
}

kc() { "$KUBECTL_BIN" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

# ------------------------------------------------------------------ gateway API CRDs
install_gateway_api() {
    local dir bundle
    bundle="$(kc get crd httproutes.gateway.networking.k8s.io \
        -o jsonpath='{.metadata.annotations.gateway\.networking\.k8s\.io/bundle-version}' 2>/dev/null || true)"
    if [[ "$bundle" == "$GATEWAY_API_VERSION" ]]; then
        log "Gateway API CRDs $GATEWAY_API_VERSION already installed"
    else
        command -v go >/dev/null 2>&1 || die "go is needed to fetch the Gateway API CRDs (module sigs.k8s.io/gateway-api)"
        mkdir -p "$CACHE/src"
        dir="$(cd "$CACHE/src" && GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" |
            sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
        [[ -d "$dir/config/crd/standard" ]] || die "no config/crd/standard in sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION"
        log "installing Gateway API $GATEWAY_API_VERSION standard CRDs"
        kc apply --server-side --force-conflicts -f "$dir/config/crd/standard/" >/dev/null
    fi
    local crds
    crds="$(kc get crd -o name | grep '\.gateway\.networking\.k8s\.io$' || true)"
    [[ -n "$crds" ]] || die "Gateway API CRDs missing after install"
    # shellcheck disable=SC2086
    kc wait --for condition=Established --timeout=60s $crds >/dev/null
}

# ------------------------------------------------------------------ kind
kind_up() {
    KUBECONFIG_PATH="$STATE/kubeconfig"
    mkdir -p "$STATE"
    if ! kind get clusters 2>/dev/null | grep -qx "$NAME"; then
        log "creating kind cluster (image ${MODELDEPLOY_KIND_NODE_IMAGE:-$KIND_NODE_IMAGE})"
        # one node, labelled as the real node is, so node-tier pods run on it (kind/cluster.yaml)
        kind create cluster --name "$NAME" --image "${MODELDEPLOY_KIND_NODE_IMAGE:-$KIND_NODE_IMAGE}" \
            --config "$here/kind/cluster.yaml" \
            --kubeconfig "$KUBECONFIG_PATH" --wait 120s >&2 8>&- || return 1
    fi
    kind get kubeconfig --name "$NAME" >"$KUBECONFIG_PATH"
    echo kind >"$STATE/runtime"
}

# ------------------------------------------------------------------ kwok binary runtime
kwok_running() {
    [[ -f "$KWOK_CLUSTER_DIR/kubeconfig.yaml" ]] &&
        "$KUBECTL_BIN" --kubeconfig "$KWOK_CLUSTER_DIR/kubeconfig.yaml" --request-timeout=5s \
            get --raw /readyz >/dev/null 2>&1
}

wait_kwok_running() { # $1 = seconds
    local deadline=$((SECONDS + $1))
    until kwok_running; do
        ((SECONDS < deadline)) || return 1
        sleep 1
    done
}

kwok_pids() { # pids of the processes kwokctl started for this cluster, alive or not
    local f
    for f in "$KWOK_CLUSTER_DIR"/pids/*.pid; do
        [[ -f "$f" ]] && tr -dc '0-9\n' <"$f" && echo
    done | grep -E '^[0-9]+$' || true
}

ours_alive() { # $1 = pid: alive (not a zombie) and running from this cluster's work dir
    local pid="$1" state
    [[ -r /proc/$pid/stat ]] || return 1
    state="$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)"
    [[ -n "$state" && "$state" != Z && "$state" != X ]] || return 1
    # kwokctl runs every component from $KWOK_CLUSTER_DIR/bin with its files in there,
    # so a recycled pid (another program) never matches
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$KWOK_CLUSTER_DIR/"
}

forget_dead_pids() { # pid files of dead (or recycled) pids would stop kwokctl from starting
    local f pid
    for f in "$KWOK_CLUSTER_DIR"/pids/*.pid; do
        [[ -f "$f" ]] || continue
        pid="$(tr -dc '0-9' <"$f")"
        if [[ -z "$pid" ]] || ! ours_alive "$pid"; then rm -f "$f"; fi
    done
}

cluster_pids() { # live processes of this cluster: from its pid files and from /proc
    local pid p
    {
        for pid in $(kwok_pids); do echo "$pid"; done
        for p in /proc/[0-9]*; do echo "${p#/proc/}"; done
    } | sort -un | while read -r pid; do
        [[ $pid == "$$" ]] && continue
        if ours_alive "$pid"; then echo "$pid"; fi
    done
}

kill_leftovers() { # stop every process of this cluster still alive (TERM, then KILL after 20 s)
    local pid left=() alive=() i
    mapfile -t left < <(cluster_pids)
    ((${#left[@]})) || return 0
    log "stopping processes: ${left[*]}"
    kill "${left[@]}" 2>/dev/null || true
    for i in $(seq 1 100); do
        alive=()
        for pid in "${left[@]}"; do if ours_alive "$pid"; then alive+=("$pid"); fi; done
        ((${#alive[@]})) || return 0
        sleep 0.2
    done
    log "killing processes that ignored SIGTERM: ${alive[*]}"
    kill -9 "${alive[@]}" 2>/dev/null || true
}

render_kwokctl_config() { # scripts/kwok/kwokctl.yaml with its @NAME@ values filled in
    local text var PKI_DIR="$KWOK_CLUSTER_DIR/pki"
    text="$(<"$here/kwok/kwokctl.yaml")"
    while [[ "$text" =~ @([A-Z_]+)@ ]]; do
        var="${BASH_REMATCH[1]}"
        [[ -n "${!var+x}" ]] || die "scripts/kwok/kwokctl.yaml uses @$var@, which is not set"
        text="${text//@$var@/${!var}}"
    done
    printf '%s\n' "$text" >"$STATE/kwokctl.yaml"
}

kwok_up() {
    load_binaries || die "the local control plane binaries could not be built (see above)"
    KUBECONFIG_PATH="$KWOK_CLUSTER_DIR/kubeconfig.yaml"
    mkdir -p "$STATE"
    if kwok_running; then
        log "cluster already running"
    else
        if [[ -d "$KWOK_CLUSTER_DIR" ]]; then
            log "found a stopped cluster: starting it again"
            forget_dead_pids
            # 8>&-: the processes kwokctl starts must not inherit our lock
            if ! "$KWOKCTL_BIN" start cluster --name "$NAME" --timeout 120s \
                >"$STATE/start.log" 2>&1 8>&- || ! wait_kwok_running 90; then
                log "restart failed; recreating the cluster"
                "$KWOKCTL_BIN" delete cluster --name "$NAME" >/dev/null 2>&1 8>&- || true
                kill_leftovers
                rm -rf "$KWOK_CLUSTER_DIR"
            fi
        fi
        if ! kwok_running; then
            log "creating cluster: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok"
            render_kwokctl_config
            if ! "$KWOKCTL_BIN" create cluster --name "$NAME" --runtime binary \
                --kubeconfig "" \
                --config "$STATE/kwokctl.yaml" \
                --config "$here/kwok/stages.yaml" \
                --kube-authorization --kube-admission \
                --etcd-binary "$ETCD_BIN" \
                --kube-apiserver-binary "$KUBE_APISERVER_BIN" \
                --kube-controller-manager-binary "$KUBE_CONTROLLER_MANAGER_BIN" \
                --kube-scheduler-binary "$KUBE_SCHEDULER_BIN" \
                --kwok-controller-binary "$KWOK_BIN" \
                --timeout 180s --wait 120s >"$STATE/create.log" 2>&1 8>&-; then
                tail -n 40 "$STATE/create.log" >&2
                for f in "$KWOK_CLUSTER_DIR"/logs/*.log; do
                    [[ -f "$f" ]] || continue
                    echo "--- tail of $f" >&2
                    tail -n 15 "$f" >&2
                done
                "$KWOKCTL_BIN" delete cluster --name "$NAME" >/dev/null 2>&1 8>&- || true
                kill_leftovers
                rm -rf "$KWOK_CLUSTER_DIR"
                die "kwokctl create cluster failed (log: $STATE/create.log)"
            fi
        fi
    fi
    echo binary >"$STATE/runtime"

    # two fake nodes, managed by kwok (its stages make them and their pods Ready); room
    # for 1000 pods each, as fake pods cost nothing and the operator benchmark runs 300+
    # their pod addresses come from ranges routed on this machine only
    local i n
    for i in "${!NODES[@]}"; do
        n="${NODES[$i]}"
        cat <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $n
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/arch: amd64
    kubernetes.io/hostname: $n
    kubernetes.io/os: linux
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: ""
    type: kwok
    $NODE_TIER_LABEL: fake
spec:
  podCIDR: ${FAKE_POD_CIDR[$i]}
  podCIDRs: [${FAKE_POD_CIDR[$i]}]
---
EOF
    done | kc apply --server-side -f - >/dev/null
    # status is a subresource: an apply of the Node ignores it, and kwok would default to 110 pods
    for n in "${NODES[@]}"; do
        kc patch node "$n" --subresource=status --type merge -p \
            '{"status":{"capacity":{"cpu":"32","memory":"256Gi","pods":"1000"},"allocatable":{"cpu":"32","memory":"256Gi","pods":"1000"}}}' >/dev/null
    done
    kc wait --for condition=Ready --timeout=60s "${NODES[@]/#/node/}" >/dev/null ||
        die "kwok nodes did not become Ready"
}

# ------------------------------------------------------------------ the real node
node_sh() { "$here/node/node.sh" "$@" 8>&-; }
# node.sh needs Linux (and bash 4): elsewhere there is never a real node to start or stop
node_possible() { [[ "$(uname -s)" == Linux ]]; }

real_node_up() {
    local required=0 why holder
    case "$REAL_NODE" in
        0 | false | no)
            if node_possible && [[ "$(node_sh owner)" == "$NAME" ]]; then node_sh down; fi
            log "real node: off (MODELDEPLOY_REAL_NODE=$REAL_NODE); kwok nodes only"
            return 0
            ;;
        1 | true | yes) required=1 ;;
        auto | "") ;;
        *) die "MODELDEPLOY_REAL_NODE must be 0, 1 or auto (got '$REAL_NODE')" ;;
    esac
    if ! node_possible; then
        ((required)) && die "the real node needs Linux (this is $(uname -s))"
        log "real node: not on $(uname -s); kwok nodes only"
        return 0
    fi
    holder="$(node_sh owner)"
    if [[ -n "$holder" && "$holder" != "$NAME" ]]; then
        why="the real node belongs to cluster $holder (free it with: MODELDEPLOY_CLUSTER_NAME=$holder scripts/cluster.sh down)"
        ((required)) && die "$why"
        log "real node: not added, $why; kwok nodes only"
        return 0
    fi
    if [[ "$holder" != "$NAME" ]]; then
        if ! why="$(node_sh install)" || ! why="$(node_sh check)"; then
            ((required)) && die "this machine cannot run the real node: $why"
            log "real node: not added, this machine cannot run it ($why); kwok nodes only"
            return 0
        fi
        log "real node: adds to this host a bridge $BRIDGE, a device $SINK with $NODE_IP, routes for" \
            "$CLUSTER_CIDR and $SERVICE_CIDR, iptables chains (MODELDEPLOY-*, KUBE-*), mounts and" \
            "cgroups, and kernel settings (ip_forward, kubelet tunables), all undone by make" \
            "cluster-down; MODELDEPLOY_REAL_NODE=0 leaves it out"
    fi
    if ! node_sh up; then
        ((required)) && die "the real node did not start (logs: $CACHE/node/$NAME/logs)"
        log "real node: did not start; removing it and going on with the kwok nodes only"
        node_sh down || true
    fi
}

# ------------------------------------------------------------------ commands
cmd_up() {
    local rt; rt="$(chosen_runtime)"
    case "$rt" in
        external)
            [[ -f "$MODELDEPLOY_KUBECONFIG" ]] || die "MODELDEPLOY_KUBECONFIG=$MODELDEPLOY_KUBECONFIG: no such file"
            log "using the cluster of MODELDEPLOY_KUBECONFIG as is"
            KUBECONFIG_PATH="$MODELDEPLOY_KUBECONFIG"
            if command -v kubectl >/dev/null 2>&1 && [[ -z "${KUBECTL_BIN:-}" ]]; then KUBECTL_BIN=kubectl; fi
            if [[ -n "${KUBECTL_BIN:-}" ]]; then
                kc get --raw /readyz >/dev/null || die "the cluster of MODELDEPLOY_KUBECONFIG does not answer"
            fi
            echo "$KUBECONFIG_PATH"
            return
            ;;
        kind)
            if ! kind_up; then
                if [[ "${MODELDEPLOY_CLUSTER_RUNTIME:-}" == kind ]]; then die "kind create cluster failed"; fi
                log "kind failed; falling back to local processes"
                rm -rf "$STATE"
                kwok_up
            fi
            ;;
        binary) kwok_up ;;
    esac
    if [[ "$(cat "$STATE/runtime" 2>/dev/null)" == binary ]]; then real_node_up; fi
    if [[ -z "${KUBECTL_BIN:-}" ]]; then
        if load_binaries --no-build 2>/dev/null; then :; else KUBECTL_BIN="$(command -v kubectl)"; fi
    fi
    install_gateway_api
    log "ready in $((SECONDS - T0))s"
    echo "$KUBECONFIG_PATH"
}

cmd_down() {
    if [[ -n "${MODELDEPLOY_KUBECONFIG:-}" ]]; then
        log "MODELDEPLOY_KUBECONFIG is set: that cluster is not ours to stop"
        return 0
    fi
    local rt=""
    [[ -f "$STATE/runtime" ]] && rt="$(cat "$STATE/runtime")"
    if [[ "$rt" == kind ]] || { [[ -z "$rt" ]] && kind_works && kind get clusters 2>/dev/null | grep -qx "$NAME"; }; then
        log "deleting kind cluster"
        kind delete cluster --name "$NAME" >&2 || true
    fi
    # the real node first: its kubelet stops the pods while the API server still answers
    if node_possible; then node_sh down; fi
    if [[ -d "$KWOK_CLUSTER_DIR" ]]; then
        log "deleting local cluster"
        local kwokctl=""
        if load_binaries --no-build >/dev/null 2>&1; then
            kwokctl="$KWOKCTL_BIN"
        else
            kwokctl="$(ls -d "$CACHE"/bin/kwok-*/kwokctl 2>/dev/null | head -n1 || true)"
        fi
        if [[ -n "$kwokctl" ]]; then
            "$kwokctl" delete cluster --name "$NAME" >/dev/null 2>&1 8>&- || true
        fi
        kill_leftovers
        rm -rf "$KWOK_CLUSTER_DIR"
    fi
    rm -rf "$STATE"
    rm -f "$CACHE/clusters/$NAME.lock"  # no state left behind, not even the lock file
    log "down"
}

cmd_kubeconfig() {
    local rt; rt="$(chosen_runtime)"
    case "$rt" in
        external) echo "$MODELDEPLOY_KUBECONFIG" ;;
        kind) [[ -f "$STATE/kubeconfig" ]] || die "no kind cluster $NAME (run: make cluster)"; echo "$STATE/kubeconfig" ;;
        binary) [[ -f "$KWOK_CLUSTER_DIR/kubeconfig.yaml" ]] || die "no local cluster $NAME (run: make cluster)"
            echo "$KWOK_CLUSTER_DIR/kubeconfig.yaml" ;;
    esac
}

cmd_status() {
    local rt; rt="$(chosen_runtime)"
    echo "cluster: $NAME"
    echo "runtime: $rt"
    echo "cache:   $CACHE"
    if [[ "$rt" == binary ]]; then
        if load_binaries --no-build 2>/dev/null; then
            echo "binaries: present"
            if kwok_running; then echo "state:   running ($KWOK_CLUSTER_DIR/kubeconfig.yaml)"; else echo "state:   not running"; fi
        else
            echo "binaries: not built yet (scripts/build-binaries.sh)"
        fi
        local holder why
        if node_possible; then holder="$(node_sh owner)"; else holder=""; fi
        if ! node_possible; then echo "real node: none (needs Linux)"
        elif [[ "$holder" == "$NAME" ]]; then echo "real node: $NODE_NAME (this cluster)"
        elif [[ -n "$holder" ]]; then echo "real node: held by cluster $holder"
        elif why="$(node_sh check)"; then echo "real node: none yet (this machine can run one)"
        else echo "real node: this machine cannot run one ($why)"; fi
    fi
}

cmd_node() { # scripts/node/node.sh for this cluster
    [[ "$(chosen_runtime)" == binary ]] || die "the real node exists only in the local-process cluster"
    node_sh "$@"
}

# one `up`/`down` at a time per cluster name
mkdir -p "$CACHE/clusters"
exec 8>"$CACHE/clusters/$NAME.lock"
flock 8

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    kubeconfig) cmd_kubeconfig ;;
    status) cmd_status ;;
    import-images) shift; cmd_node import-images "$@" ;;
    node) shift; cmd_node "$@" ;;
    *) echo "usage: $0 up|down|kubeconfig|status|import-images|node" >&2; exit 2 ;;
esac
