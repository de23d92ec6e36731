#!/usr/bin/env bash
# shellcheck disable=SC2034 # variables only templates/ use (through render) look unused
# The real node of the local cluster, beside kwok's fake nodes: containerd and runc, a CNI
# bridge, kubelet, kube-proxy (iptables mode), CoreDNS, and a relay that lets pods reach the
# API server. scripts/cluster.sh runs it; docs/local-cluster.md describes it.
#
#   node.sh check              can this machine run it? exit 0, or 1 printing why
#   node.sh install            install the Debian packages it needs, when missing
#   node.sh up                 start it for the cluster (idempotent: starts what is not running)
#   node.sh down               stop it and undo every change it made to the host (idempotent)
#   node.sh stop COMPONENT     stop one process (kube-proxy also removes its rules); `up`
#                              starts it again. COMPONENT: containerd kubelet kube-proxy
#                              coredns apiserver-relay
#   node.sh import-images [NAME=ARCHIVE ...]
#                              import OCI archives into its containerd as
#                              docker.io/local/NAME:TAG (TAG from the archive); without
#                              arguments, the node's own images and those of make images
#   node.sh owner              print the cluster holding the real node (empty: none, or
#                              one whose cluster is gone, which the next `up` replaces)
#   node.sh env                NAME=value lines for tests and tools (addresses, paths, images)
#
# Environment: MODELDEPLOY_CLUSTER_NAME (default modeldeploy), MODELDEPLOY_CACHE (default
# ~/.cache/modeldeploy); the cluster's control plane must be running (scripts/cluster.sh).
#
# One real node runs on a host at a time (its bridge, routes, iptables chains and ports are
# host-wide): the first cluster to start one holds it until `down`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
scripts="$(dirname "$here")"
# shellcheck source=network.env
source "$here/network.env"

NAME="${MODELDEPLOY_CLUSTER_NAME:-modeldeploy}"
CACHE="${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}"
NODE_DIR="$CACHE/node/$NAME"
NODE_RUN="$NODE_DIR/run"
ETC="$NODE_DIR/etc"
CONTAINERD_SOCK="$NODE_RUN/containerd.sock"
KWOK_CLUSTER_DIR="$CACHE/kwok/clusters/$NAME"
KUBECONFIG_PATH="$KWOK_CLUSTER_DIR/kubeconfig.yaml"
CLUSTER_CA="$KWOK_CLUSTER_DIR/pki/ca.crt"    # kubelet.yaml's @CLUSTER_CA@
IMAGES_DIR="$CACHE/images"            # where make images leaves its archives
# Host-wide, on tmpfs (a reboot undoes the node's host changes, and forgets these too).
HOST_DIR=/run/modeldeploy-node
CGROUP_ROOT=modeldeploy
COMPONENTS=(containerd apiserver-relay coredns kubelet kube-proxy)
# The kernel settings the node's programs change (the bridge plugin turns on forwarding,
# the kubelet sets its panic and overcommit tunables): saved at start, restored at down.
SYSCTLS=(net.ipv4.ip_forward net.ipv4.conf.all.route_localnet
    net.bridge.bridge-nf-call-iptables vm.overcommit_memory vm.panic_on_oom kernel.panic
    kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
CLEAN_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

T0=$SECONDS
log() { printf '[node %s %3ds] %s\n' "$NAME" "$((SECONDS - T0))" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ------------------------------------------------------------------ can this machine run it?
# command -> Debian package
declare -A PACKAGE_OF=(
    [containerd]=containerd [ctr]=containerd [containerd-shim-runc-v2]=containerd
    [runc]=runc [iptables]=iptables [iptables-save]=iptables [nft]=nftables
    [conntrack]=conntrack [socat]=socat [umoci]=umoci [curl]=curl [ip]=iproute2
)

cni_bin_dir() { # Debian's plugin directory, or the usual upstream one
    local d
    for d in /usr/lib/cni /opt/cni/bin; do
        [[ -x "$d/bridge" && -x "$d/host-local" && -x "$d/portmap" && -x "$d/loopback" ]] && { echo "$d"; return 0; }
    done
    return 1
}

missing_packages() {
    local c pkgs=()
    for c in "${!PACKAGE_OF[@]}"; do
        command -v "$c" >/dev/null 2>&1 || pkgs+=("${PACKAGE_OF[$c]}")
    done
    cni_bin_dir >/dev/null || pkgs+=(containernetworking-plugins)
    ((${#pkgs[@]})) && printf '%s\n' "${pkgs[@]}" | sort -u
    return 0
}

cmd_install() {
    local pkgs
    mapfile -t pkgs < <(missing_packages)
    ((${#pkgs[@]})) || return 0
    if ((EUID != 0)) || ! command -v apt-get >/dev/null 2>&1; then
        echo "the real node needs: ${pkgs[*]} (Debian/Ubuntu: apt-get install ${pkgs[*]})"
        return 1
    fi
    log "installing ${pkgs[*]} from Debian's packages (first time only)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    # containerd's own service is never started (no systemd here; and node.sh always runs
    # its own containerd with its own configuration)
    apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
}

probe_link() { # $1 = type: can the kernel make one?
    local dev="mdprobe$$"
    ip link add "$dev" type "$1" >/dev/null 2>&1 || return 1
    ip link del "$dev" >/dev/null 2>&1 || true
}

sink_type() { # dummy where the kernel has it, else ifb: both drop what is routed to them
    if ip link show "$SINK" >/dev/null 2>&1; then
        ip -d link show "$SINK" | sed -n 's/^ *\(dummy\|ifb\) .*/\1/p' | head -n1
        return 0
    fi
    local t
    for t in dummy ifb; do probe_link "$t" && { echo "$t"; return 0; }; done
    return 1
}

cgroup_version() {
    if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then echo 2
    elif [[ -d /sys/fs/cgroup/memory && -d /sys/fs/cgroup/cpu && -d /sys/fs/cgroup/pids ]]; then echo 1
    else return 1; fi
}

# Prints why not, on stdout, and fails; silent success otherwise.
cmd_check() {
    [[ "$(uname -s)" == Linux ]] || { echo "not Linux"; return 1; }
    ((EUID == 0)) || { echo "not root (containerd, the kubelet and the CNI bridge need root)"; return 1; }
    local pkgs
    mapfile -t pkgs < <(missing_packages)
    ((${#pkgs[@]} == 0)) || { echo "missing packages: ${pkgs[*]}"; return 1; }
    grep -qw overlay /proc/filesystems || { echo "the kernel has no overlay filesystem"; return 1; }
    cgroup_version >/dev/null || { echo "no usable cgroup hierarchy under /sys/fs/cgroup"; return 1; }
    [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] ||
        { echo "the kernel has no br_netfilter (needed for Services between pods on the bridge)"; return 1; }
    [[ -e /proc/sys/net/netfilter/nf_conntrack_max ]] || { echo "the kernel has no conntrack"; return 1; }
    ip link show "$BRIDGE" >/dev/null 2>&1 || probe_link bridge || { echo "cannot create a bridge device"; return 1; }
    probe_link veth || { echo "cannot create veth devices"; return 1; }
    sink_type >/dev/null || { echo "cannot create a dummy or ifb device"; return 1; }
    local t
    for t in raw mangle nat filter; do
        iptables -t "$t" -S >/dev/null 2>&1 || { echo "iptables cannot use its $t table"; return 1; }
    done
    # the API server reaches the kubelet (on 127.0.0.1) by the node's name
    getent ahostsv4 "$NODE_NAME" 2>/dev/null | grep -q '^127\.0\.0\.1 ' ||
        { echo "$NODE_NAME does not resolve to 127.0.0.1 (see /etc/hosts)"; return 1; }
    [[ ${#CONTAINERD_SOCK} -lt 100 ]] || { echo "socket path too long: $CONTAINERD_SOCK (set MODELDEPLOY_CACHE to a shorter path)"; return 1; }
    return 0
}

# ------------------------------------------------------------------ who holds the node
lock_host() { # one node operation at a time on this host (a nested node.sh inherits it)
    [[ -n "${MODELDEPLOY_NODE_LOCKED:-}" ]] && return 0
    mkdir -p /run/lock
    exec 9>/run/lock/modeldeploy-node.lock
    flock 9
    export MODELDEPLOY_NODE_LOCKED=1
}

owner() { if [[ -f "$HOST_DIR/owner" ]]; then cat "$HOST_DIR/owner"; fi; }
me() { printf '%s %s\n' "$NAME" "$CACHE"; }

holder_name() { # the cluster holding the node, unless its cluster is gone (then `up` replaces it)
    local n c
    read -r n c <<<"$(owner)"
    if [[ -n "$n" && -d "$c/clusters/$n" ]]; then echo "$n"; fi
}

# Take the node for this cluster, or say who holds it. A holder whose cluster no longer
# exists (its state was removed without `down`) is cleaned up and replaced.
claim() {
    mkdir -p "$HOST_DIR"
    local cur other_name other_cache
    cur="$(owner)"
    if [[ -n "$cur" && "$cur" != "$(me)" ]]; then
        read -r other_name other_cache <<<"$cur"
        if [[ -d "$other_cache/clusters/$other_name" ]]; then
            echo "the real node belongs to cluster $other_name (free it with: MODELDEPLOY_CLUSTER_NAME=$other_name scripts/cluster.sh down)"
            return 1
        fi
        log "cluster $other_name is gone but its real node was not stopped: cleaning it up"
        MODELDEPLOY_CLUSTER_NAME="$other_name" MODELDEPLOY_CACHE="$other_cache" "$0" down || true
        mkdir -p "$HOST_DIR"
    fi
    me >"$HOST_DIR/owner"
}

# ------------------------------------------------------------------ processes
pid_file() { echo "$NODE_DIR/pids/$1.pid"; }

start_time() { # $1 = pid: its start time in clock ticks since boot (tells a recycled pid apart)
    local s
    s="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    s="${s##*) }"
    # shellcheck disable=SC2086
    set -- $s
    [[ "$1" != Z && "$1" != X ]] || return 1
    echo "${20}"
}

pid_of() { # $1 = component: its pid when it runs, else fail
    local f pid t
    f="$(pid_file "$1")"
    [[ -f "$f" ]] || return 1
    read -r pid t <"$f" || return 1
    [[ -n "$pid" && "$(start_time "$pid" 2>/dev/null)" == "$t" ]] || return 1
    echo "$pid"
}

running() { pid_of "$1" >/dev/null; }

# start COMPONENT ENV... -- CMD...: in its own session, its output in logs/COMPONENT.log,
# with a clean environment (no proxy or locale settings of the caller leak in).
start() {
    local name="$1"; shift
    local envs=()
    while [[ "$1" != -- ]]; do envs+=("$1"); shift; done
    shift
    mkdir -p "$NODE_DIR/logs" "$NODE_DIR/pids"
    printf '\n--- %s started %s\n' "$name" "$(date -u +%FT%TZ)" >>"$NODE_DIR/logs/$name.log"
    env -i PATH="$CLEAN_PATH" HOME="$HOME" "${envs[@]}" setsid "$@" \
        </dev/null >>"$NODE_DIR/logs/$name.log" 2>&1 8>&- 9>&- &
    local pid=$!
    local t=""
    t="$(start_time "$pid")" || { sleep 0.2; die "$name exited at once (log: $NODE_DIR/logs/$name.log): $(tail -n 5 "$NODE_DIR/logs/$name.log")"; }
    echo "$pid $t" >"$(pid_file "$name")"
}

stop() { # $1 = component: TERM its process group, KILL after 15 s
    local name="$1" pid i
    pid="$(pid_of "$name")" || { rm -f "$(pid_file "$name")"; return 0; }
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 75); do
        running "$name" || break
        sleep 0.2
    done
    if running "$name"; then
        log "$name ignored SIGTERM; killing it"
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        sleep 0.2
    fi
    rm -f "$(pid_file "$name")"
}

wait_for() { # $1 = what, $2 = seconds, $3.. = command that succeeds when ready
    local what="$1" secs="$2" deadline
    shift 2
    deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            log "timed out after ${secs}s waiting for $what"
            return 1
        fi
        sleep 0.2
    done
}

# wait_started COMPONENT SECONDS CMD...: until CMD succeeds; fails at once, showing the end
# of the component's log, if the component exits or the time is up
wait_started() {
    local name="$1" secs="$2" deadline
    shift 2
    deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        if ! running "$name" || ((SECONDS >= deadline)); then
            if running "$name"; then log "$name did not become ready within ${secs}s"; else log "$name exited"; fi
            log "last lines of $NODE_DIR/logs/$name.log:"
            tail -n 25 "$NODE_DIR/logs/$name.log" >&2
            return 1
        fi
        sleep 0.2
    done
}

http_ok() { curl -fsS --max-time 2 -o /dev/null "$1"; }

kc() { "$KUBECTL_BIN" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

# ------------------------------------------------------------------ configuration
render() { # $1 = template in templates/, $2 = output: @NAME@ becomes the value of $NAME
    local text var
    text="$(<"$here/templates/$1")"
    while [[ "$text" =~ @([A-Z_]+)@ ]]; do
        var="${BASH_REMATCH[1]}"
        [[ -n "${!var+x}" ]] || die "template $1 uses @$var@, which is not set"
        text="${text//@$var@/${!var}}"
    done
    printf '%s\n' "$text" >"$2.tmp"
    mv -f "$2.tmp" "$2"
}

api_port() { # the API server's port, from the cluster's kubeconfig
    sed -n 's#^ *server: https://127\.0\.0\.1:\([0-9]*\).*#\1#p' "$KUBECONFIG_PATH" | head -n1
}

write_configs() {
    mkdir -p "$ETC/cni" "$NODE_RUN"
    RUNC="$(command -v runc)"
    CNI_BIN_DIR="$(cni_bin_dir)"
    render containerd.toml "$ETC/containerd.toml"
    render cni.conflist "$ETC/cni/10-modeldeploy.conflist"
    render kubelet.yaml "$ETC/kubelet.yaml"
    render kube-proxy.yaml "$ETC/kube-proxy.yaml"
    render Corefile "$ETC/Corefile"
}

# ------------------------------------------------------------------ host network
sysctl_path() { echo "/proc/sys/${1//.//}"; }

save_sysctls() {
    [[ -f "$HOST_DIR/sysctls" ]] && return 0
    local k p
    for k in "${SYSCTLS[@]}"; do
        p="$(sysctl_path "$k")"
        [[ -r "$p" ]] && printf '%s %s\n' "$k" "$(tr -s '\t ' ' ' <"$p")"
    done >"$HOST_DIR/sysctls.tmp"
    mv "$HOST_DIR/sysctls.tmp" "$HOST_DIR/sysctls"
}

restore_sysctls() {
    [[ -f "$HOST_DIR/sysctls" ]] || return 0
    local k v
    while read -r k v; do
        echo "$v" >"$(sysctl_path "$k")" 2>/dev/null || log "could not restore $k=$v"
    done <"$HOST_DIR/sysctls"
    rm -f "$HOST_DIR/sysctls"
}

iptables_chains() { # every chain of the four tables, IPv4 and IPv6: PROGRAM/TABLE/CHAIN lines
    local ipt t
    for ipt in iptables ip6tables; do
        command -v "$ipt-save" >/dev/null 2>&1 || continue
        for t in raw mangle nat filter; do
            "$ipt-save" -t "$t" 2>/dev/null | sed -n "s#^:\([^ ]*\) .*#$ipt/$t/\1#p"
        done
    done
}

nft_tables() { nft list tables 2>/dev/null | sed 's/^table //' || true; }

# What existed before the node: teardown removes only what appeared after (KUBE-*, CNI-*).
save_host_tables() {
    [[ -f "$HOST_DIR/chains.before" ]] || iptables_chains >"$HOST_DIR/chains.before"
    [[ -f "$HOST_DIR/nft.before" ]] || nft_tables >"$HOST_DIR/nft.before"
}

# chain TABLE NAME HOOK RULE...: (re)fill our chain NAME and jump to it first from HOOK.
chain() {
    local t="$1" c="$2" hook="$3"
    shift 3
    iptables -t "$t" -N "$c" 2>/dev/null || iptables -t "$t" -F "$c"
    local r
    for r in "$@"; do
        # shellcheck disable=SC2086
        iptables -t "$t" -A "$c" $r
    done
    iptables -t "$t" -C "$hook" -j "$c" 2>/dev/null || iptables -t "$t" -I "$hook" 1 -j "$c"
}

# Traffic containment: nothing for the node's addresses (pods, Services, NODE_IP) and
# nothing from pods leaves the machine, whatever kube-proxy's rules say, and nothing from
# outside reaches them. Routes first (a packet for an address nobody claims goes to the
# sink, which drops it), then iptables rules of our own in the tables kube-proxy does not
# use (raw, mangle), so none of its ACCEPTs comes before them.
network_up() {
    local sink
    sink="$(sink_type)" || die "cannot create a dummy or ifb device"
    if ! ip link show "$SINK" >/dev/null 2>&1; then
        ip link add "$SINK" type "$sink"
    fi
    ip link set "$SINK" up
    ip addr replace "$NODE_IP/32" dev "$SINK"
    ip route replace "$SERVICE_CIDR" dev "$SINK"
    ip route replace "$CLUSTER_CIDR" dev "$SINK"
    # The bridge exists from the start (the CNI plugin would make it with the first pod),
    # so the node's pod range is routed to it before any pod runs.
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "$BRIDGE" type bridge
    fi
    ip addr replace "$BRIDGE_IP/${NODE_POD_CIDR#*/}" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables

    local ours=("$NODE_IP" "$CLUSTER_CIDR" "$SERVICE_CIDR")
    local d in_rules=("-i lo -j RETURN" "-i $BRIDGE -j RETURN") out_rules=("-o lo -j RETURN" "-o $BRIDGE -j RETURN")
    for d in "${ours[@]}"; do
        in_rules+=("-d $d -j DROP")
        out_rules+=("-d $d -j DROP")
    done
    out_rules+=("-s $CLUSTER_CIDR -j DROP" "-s $NODE_IP -j DROP")
    # from outside the machine: nothing reaches the node's addresses (before any DNAT)
    chain raw MODELDEPLOY-PREROUTING PREROUTING "${in_rules[@]}"
    # leaving the machine: nothing to or from them (after every DNAT and route)
    chain mangle MODELDEPLOY-POSTROUTING POSTROUTING "${out_rules[@]}"
    # pods reach the API server's relay and DNS on NODE_IP, nothing else of the host
    chain filter MODELDEPLOY-INPUT INPUT \
        "-i $BRIDGE -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN" \
        "-i $BRIDGE -d $NODE_IP -p tcp --dport $APISERVER_PORT -j RETURN" \
        "-i $BRIDGE -d $NODE_IP -p udp --dport 53 -j RETURN" \
        "-i $BRIDGE -d $NODE_IP -p tcp --dport 53 -j RETURN" \
        "-i $BRIDGE -j REJECT"
    # answer at once rather than let a client time out (what the sink swallows, and pods'
    # packets for anything but other pods)
    chain filter MODELDEPLOY-FORWARD FORWARD \
        "-o $SINK -j REJECT" \
        "-i $BRIDGE ! -o $BRIDGE -j REJECT"
    # (OUTPUT's -o is the device routed to before kube-proxy's DNAT: skip DNATed packets)
    chain filter MODELDEPLOY-OUTPUT OUTPUT "-o $SINK -m conntrack ! --ctstate DNAT -j REJECT"
}

delete_chains() { # $1 = regex of chain names; only chains that did not exist before the node
    local ipt t c line spec
    local before="$HOST_DIR/chains.before"
    local doomed=()
    while IFS=/ read -r ipt t c; do
        [[ "$c" =~ $1 ]] || continue
        if [[ -f "$before" ]] && grep -qxF "$ipt/$t/$c" "$before"; then continue; fi
        doomed+=("$ipt/$t/$c")
    done < <(iptables_chains)
    ((${#doomed[@]})) || return 0
    # first every jump to them (from any chain), then their rules, then the chains
    for spec in "${doomed[@]}"; do
        IFS=/ read -r ipt t c <<<"$spec"
        while read -r line; do
            eval "$ipt -t $t -D ${line#-A }" 2>/dev/null || true
        done < <("$ipt-save" -t "$t" | grep -E -- "^-A .* -[jg] $c( |\$)" || true)
    done
    for spec in "${doomed[@]}"; do
        IFS=/ read -r ipt t c <<<"$spec"
        "$ipt" -t "$t" -F "$c" 2>/dev/null || true
    done
    for spec in "${doomed[@]}"; do
        IFS=/ read -r ipt t c <<<"$spec"
        "$ipt" -t "$t" -X "$c" 2>/dev/null || true
    done
}

# nftables tables that appeared with the node (iptables' own, made on first use, and any
# of kube-proxy's) once they hold no rule: only chain headers, hooks and policies are left
delete_new_nft_tables() {
    command -v nft >/dev/null 2>&1 || return 0
    local tbl rules
    while read -r tbl; do
        [[ -n "$tbl" ]] || continue
        if [[ -f "$HOST_DIR/nft.before" ]] && grep -qxF "$tbl" "$HOST_DIR/nft.before"; then continue; fi
        # shellcheck disable=SC2086
        rules="$(nft list table $tbl 2>/dev/null |
            grep -cvE '^(table .*|[[:space:]]*(chain .*|type .*|policy .*|\}|))$' || true)"
        # shellcheck disable=SC2086
        [[ "$rules" == 0 ]] && nft delete table $tbl 2>/dev/null
    done < <(nft_tables)
    return 0
}

network_down() {
    delete_chains '^(MODELDEPLOY-|KUBE-|CNI-)'
    # connection tracking entries of the pods' and Services' flows (kept for days otherwise)
    local r d
    for r in "$CLUSTER_CIDR" "$SERVICE_CIDR" "$NODE_IP"; do
        for d in -s -d; do conntrack -D "$d" "$r" >/dev/null 2>&1 || true; done
    done
    delete_new_nft_tables
    ip link del "$BRIDGE" 2>/dev/null || true
    ip link del "$SINK" 2>/dev/null || true   # its address and routes go with it
    restore_sysctls
    rm -f "$HOST_DIR/chains.before" "$HOST_DIR/nft.before"
}

# ------------------------------------------------------------------ cgroups
cgroup_dirs() { # our cgroup root in every hierarchy
    if [[ "$(cgroup_version 2>/dev/null)" == 2 ]]; then
        echo "/sys/fs/cgroup/$CGROUP_ROOT"
    else
        local h
        for h in /sys/fs/cgroup/*/; do
            [[ -L "${h%/}" ]] && continue   # cpu,cpuacct style links to one hierarchy
            echo "${h%/}/$CGROUP_ROOT"
        done
    fi
}

cgroups_up() {
    local d parent
    while read -r d; do
        mkdir -p "$d"
        parent="$(dirname "$d")"
        # a new cpuset cgroup starts with no CPUs and no memory nodes: give it the parent's
        if [[ -f "$d/cpuset.cpus" && -z "$(cat "$d/cpuset.cpus")" ]]; then
            cat "$parent/cpuset.cpus" >"$d/cpuset.cpus"
            cat "$parent/cpuset.mems" >"$d/cpuset.mems"
        fi
    done < <(cgroup_dirs)
}

cgroup_pids() { # every process in our cgroups
    local d
    while read -r d; do
        [[ -d "$d" ]] && find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null
    done < <(cgroup_dirs) | sort -un
}

kill_cgroup_procs() {
    local pids
    for _ in 1 2 3 4 5; do
        mapfile -t pids < <(cgroup_pids)
        ((${#pids[@]})) || return 0
        kill -KILL "${pids[@]}" 2>/dev/null || true
        sleep 0.3
    done
}

cgroups_down() {
    local d
    kill_cgroup_procs
    while read -r d; do
        [[ -d "$d" ]] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
        [[ -d "$d" ]] && log "could not remove cgroup $d"
    done < <(cgroup_dirs)
    return 0
}

# ------------------------------------------------------------------ mounts and files
mounts_under() { # $1 = directory: the mount points at or under it, deepest first
    awk -v p="$1/" '{ m = $5; gsub(/\\040/, " ", m); if (index(m "/", p) == 1) print m }' /proc/self/mountinfo |
        awk '{ print length($0) " " $0 }' | sort -rn | cut -d' ' -f2-
}

unmount_under() { # $1 = directory
    local m ms
    for _ in 1 2 3; do
        mapfile -t ms < <(mounts_under "$1")
        ((${#ms[@]})) || return 0
        for m in "${ms[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
    done
    mapfile -t ms < <(mounts_under "$1")
    ((${#ms[@]} == 0)) || log "mounts left: ${ms[*]}"
}

shim_pids() { # containerd's shims of this node (they outlive containerd)
    local f pid
    # one grep over every command line (arguments are NUL-separated): the socket is one
    while read -r f; do
        pid="${f#/proc/}"
        pid="${pid%/cmdline}"
        [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == containerd-shim* ]] && echo "$pid"
    done < <(grep -lzxF -- "$CONTAINERD_SOCK" /proc/[0-9]*/cmdline 2>/dev/null)
    return 0
}

# After the pods' sandboxes died without the CNI plugins being called (containerd killed):
# their addresses in host-local's store, and libcni's cached results (ours, and the
# loopback ones of the same sandboxes). Their veths went with their network namespaces.
forget_pod_networks() {
    local f id
    rm -rf "$NODE_DIR/cni/networks"
    for f in /var/lib/cni/results/modeldeploy-node-*; do
        [[ -f "$f" ]] || continue
        id="${f#/var/lib/cni/results/modeldeploy-node-}"
        id="${id%-*}"
        rm -f "$f" "/var/lib/cni/results/cni-loopback-$id-lo"
    done
}

# What the kubelet and the CNI plugins write outside the node's directory.
host_files_down() {
    local f
    # the kubelet's links to container logs point into our pod-logs directory
    for f in /var/log/containers/*.log; do
        [[ -L "$f" && "$(readlink "$f")" == "$NODE_DIR/"* ]] && rm -f "$f"
    done
    rmdir /var/log/containers 2>/dev/null || true
    forget_pod_networks
    rmdir /var/lib/cni/results /var/lib/cni 2>/dev/null || true
    # the kubelet's device plugin directory is fixed, outside its --root-dir
    rm -f /var/lib/kubelet/device-plugins/kubelet.sock
    rmdir /var/lib/kubelet/device-plugins /var/lib/kubelet 2>/dev/null || true
    # containerd's shims keep their sockets in a fixed directory, whatever the state dir
    rmdir /run/containerd/s /run/containerd 2>/dev/null || true
}

# ------------------------------------------------------------------ binaries and images
load_binaries() {
    local out
    out="$("$scripts/build-binaries.sh" --node)" || die "the node's binaries could not be built (see above)"
    eval "$out"
}

archive_digest() { # $1 = OCI archive: the digest of the manifest its index names
    tar -xOf "$1" index.json | grep -oE '"digest" *: *"sha256:[0-9a-f]{64}"' | head -n1 | grep -oE 'sha256:[0-9a-f]{64}'
}

archive_tag() { # $1 = OCI archive: its tag-only reference
    tar -xOf "$1" index.json | grep -oE '"org.opencontainers.image.ref.name" *: *"[^"]*"' | head -n1 |
        sed 's/.*: *"\(.*\)"/\1/'
}

ctr_() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

# import_image NAME ARCHIVE: as docker.io/local/NAME:TAG, unless that image is already there
import_image() {
    local name="$1" archive="$2" tag digest ref have
    [[ -f "$archive" ]] || die "no image archive $archive"
    tag="$(archive_tag "$archive")"
    digest="$(archive_digest "$archive")"
    [[ -n "$tag" && "$tag" != */* && "$tag" != *:* ]] ||
        die "$archive: its reference must be a tag only (buildah push IMG oci-archive:FILE:TAG), found '$tag'"
    ref="docker.io/local/$name:$tag"
    have="$(ctr_ images ls "name==$ref" 2>/dev/null | awk 'NR > 1 { print $3 }')"
    if [[ "$have" == "$digest" ]]; then
        return 0
    fi
    ctr_ images import --base-name "docker.io/local/$name" "$archive" >/dev/null
    have="$(ctr_ images ls "name==$ref" | awk 'NR > 1 { print $3 }')"
    [[ "$have" == "$digest" ]] || die "importing $archive did not create $ref"
    log "imported $ref"
}

# The archives make images leaves, as NAME=ARCHIVE lines: its manifest.tsv has one line per
# image (name, tag, archive, bytes, image id; tab-separated), each archive a tag-only reference.
built_images() {
    local manifest="$IMAGES_DIR/manifest.tsv" name tag archive rest
    [[ -f "$manifest" ]] || return 0
    while IFS=$'\t' read -r name tag archive rest; do
        [[ -n "$name" && "$name" != \#* ]] || continue
        [[ "$archive" == /* ]] || archive="$IMAGES_DIR/$archive"
        echo "$name=$archive"
    done <"$manifest"
}

cmd_import_images() {
    running containerd || die "the real node of cluster $NAME is not running (make cluster)"
    local specs=("$@") s
    if ((${#specs[@]} == 0)); then
        load_binaries
        specs=("pause=$PAUSE_ARCHIVE" "nodecheck=$NODECHECK_ARCHIVE")
        mapfile -t -O 2 specs < <(built_images)
    fi
    for s in "${specs[@]}"; do
        [[ "$s" == *=* ]] || die "import-images takes NAME=ARCHIVE arguments, got '$s'"
        import_image "${s%%=*}" "${s#*=}"
    done
}

# ------------------------------------------------------------------ up
start_containerd() {
    running containerd && return 0
    # a containerd that died left its shims and mounts: start from a clean state
    stop_pods_hard
    forget_pod_networks
    [[ -z "$(mounts_under "$NODE_RUN")" ]] || die "cannot unmount what the last containerd left under $NODE_RUN"
    rm -rf --one-file-system "$NODE_RUN"
    mkdir -p "$NODE_RUN"
    # Pulls go to a proxy on a closed loopback port: no image is ever fetched from outside.
    start containerd HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 \
        http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9 NO_PROXY= no_proxy= \
        -- containerd --config "$ETC/containerd.toml"
    wait_started containerd 30 ctr --address "$CONTAINERD_SOCK" version || die "containerd did not start"
}

start_relay() {
    running apiserver-relay && return 0
    # The API server listens on 127.0.0.1 only; pods reach it at NODE_IP (the `kubernetes`
    # Service's endpoint), through this relay. TLS passes through untouched.
    start apiserver-relay -- socat "TCP4-LISTEN:$APISERVER_PORT,bind=$NODE_IP,reuseaddr,fork" \
        "TCP4:127.0.0.1:$APISERVER_PORT"
}

start_coredns() {
    running coredns && return 0
    start coredns -- "$COREDNS_BIN" -conf "$ETC/Corefile"
}

start_kubelet() {
    running kubelet && return 0
    start kubelet -- "$KUBELET_BIN" --config "$ETC/kubelet.yaml" --kubeconfig "$KUBECONFIG_PATH" \
        --root-dir "$NODE_DIR/kubelet" --cert-dir "$NODE_DIR/kubelet-pki" \
        --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" \
        --node-labels "$NODE_TIER_LABEL=real"
}

start_kube_proxy() {
    running kube-proxy && return 0
    start kube-proxy -- "$KUBE_PROXY_BIN" --config "$ETC/kube-proxy.yaml"
}

node_ready() {
    [[ "$(kc get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}

cmd_up() {
    local why
    why="$(cmd_check)" || die "this machine cannot run the real node: $why"
    [[ -f "$KUBECONFIG_PATH" ]] || die "cluster $NAME is not running (scripts/cluster.sh up)"
    load_binaries
    # a control plane made before the real node existed advertises another address, and its
    # certificate and kubelet client settings do not fit: it must be made again
    local advertised
    advertised="$(kc get endpoints kubernetes -n default -o jsonpath='{.subsets[0].addresses[0].ip}')"
    [[ "$advertised" == "$NODE_IP" ]] ||
        die "cluster $NAME was created without the real node's settings (its API server advertises" \
            "'$advertised', not $NODE_IP): make cluster-down, then make cluster"
    lock_host
    why="$(claim)" || die "$why"
    APISERVER_PORT="$(api_port)"
    [[ -n "$APISERVER_PORT" ]] || die "no API server port in $KUBECONFIG_PATH"
    PAUSE_IMAGE="docker.io/local/pause:$(archive_tag "$PAUSE_ARCHIVE")"

    # the host side is (re)applied every time: cheap, and it repairs what went missing
    save_sysctls
    save_host_tables
    write_configs
    network_up
    cgroups_up
    local all=1 c
    for c in "${COMPONENTS[@]}"; do running "$c" || all=0; done
    if ((all)) && node_ready; then
        log "real node already running"
        return 0
    fi
    start_containerd
    import_image pause "$PAUSE_ARCHIVE"
    import_image nodecheck "$NODECHECK_ARCHIVE"
    start_relay
    start_coredns
    start_kubelet
    wait_started kubelet 90 node_ready || die "the real node did not become Ready"
    kc uncordon "$NODE_NAME" >/dev/null # cordoned by a previous down, if any
    # the range the CNI bridge hands out, on the Node as a controller-manager would set it
    # (set once; the field cannot change afterwards)
    if [[ -z "$(kc get node "$NODE_NAME" -o jsonpath='{.spec.podCIDR}')" ]]; then
        kc patch node "$NODE_NAME" --type merge \
            -p "{\"spec\":{\"podCIDR\":\"$NODE_POD_CIDR\",\"podCIDRs\":[\"$NODE_POD_CIDR\"]}}" >/dev/null
    fi
    # kube-proxy reads the node's addresses once, at start: after the kubelet registered it
    start_kube_proxy
    wait_started kube-proxy 60 http_ok "http://127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT/healthz" ||
        die "kube-proxy did not become healthy"
    wait_started coredns 60 http_ok "http://127.0.0.1:$COREDNS_READY_PORT/ready" ||
        die "CoreDNS did not become ready"
    running apiserver-relay || die "the API server relay exited: $(tail -n 5 "$NODE_DIR/logs/apiserver-relay.log")"
    log "real node $NODE_NAME Ready (pods $NODE_POD_CIDR, Services $SERVICE_CIDR, DNS $NODE_IP)"
}

# ------------------------------------------------------------------ down
# Ask the kubelet to stop every pod (so the CNI plugins undo their work), if the API
# server and the kubelet still answer; bounded, as everything below cleans up anyway.
stop_pods_gracefully() {
    running kubelet && running containerd && [[ -f "$KUBECONFIG_PATH" ]] || return 0
    [[ -n "${KUBECTL_BIN:-}" ]] || return 0
    kc --request-timeout=5s cordon "$NODE_NAME" >/dev/null 2>&1 || return 0
    kc --request-timeout=10s delete pods --all-namespaces --field-selector "spec.nodeName=$NODE_NAME" \
        --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
    wait_for "the kubelet to stop the pods" 20 no_sandboxes || true
}

no_sandboxes() { [[ -z "$(ctr_ tasks ls -q 2>/dev/null)" ]]; }

# A shim listens on /run/containerd/s/<sha256 of ADDRESS/NAMESPACE/ID> (containerd 1.6,
# whatever its state dir) and removes it when it exits, but not when it is killed.
shim_socket() { # $1 = shim pid
    local args=() ns="" id="" i
    mapfile -d '' -t args <"/proc/$1/cmdline" 2>/dev/null || return 0
    for ((i = 0; i + 1 < ${#args[@]}; i++)); do
        case "${args[$i]}" in
            -namespace) ns="${args[$((i + 1))]}" ;;
            -id) id="${args[$((i + 1))]}" ;;
        esac
    done
    [[ -n "$ns" && -n "$id" ]] || return 0
    printf '/run/containerd/s/%s\n' "$(printf '%s' "$CONTAINERD_SOCK/$ns/$id" | sha256sum | cut -d' ' -f1)"
}

kill_shims() {
    local shims sockets p
    mapfile -t shims < <(shim_pids)
    ((${#shims[@]})) || return 0
    for p in "${shims[@]}"; do sockets+=("$(shim_socket "$p")"); done
    kill -KILL "${shims[@]}" 2>/dev/null || true
    sleep 0.2
    for p in "${sockets[@]}"; do [[ -S "$p" ]] && rm -f "$p"; done
    return 0
}

stop_pods_hard() { # whatever still runs in the pods' cgroups, the shims, their mounts
    kill_cgroup_procs
    kill_shims
    unmount_under "$NODE_RUN"
}

remove_node_dir() { # never through a mount point (a pod's volume could be a host directory)
    local left
    mapfile -t left < <(mounts_under "$NODE_DIR")
    if ((${#left[@]})); then
        log "not removing $NODE_DIR: still mounted: ${left[*]}"
        return 1
    fi
    rm -rf --one-file-system "$NODE_DIR"
    rmdir "$CACHE/node" 2>/dev/null || true
}

cmd_down() {
    # nothing to do for a cluster that never had the real node
    [[ -d "$NODE_DIR" || "$(owner)" == "$(me)" ]] || return 0
    lock_host
    # host-wide things (the pods' cgroups, the network) only when this cluster holds the
    # node; its own processes, shims and mounts in any case
    local holder=0
    [[ "$(owner)" == "$(me)" ]] && holder=1
    log "stopping the real node"
    local out
    if out="$("$scripts/build-binaries.sh" --no-build --node 2>/dev/null)"; then eval "$out"; fi
    ((holder)) && stop_pods_gracefully
    stop kubelet
    stop kube-proxy
    stop coredns
    stop apiserver-relay
    ((holder)) && cgroups_down
    kill_shims
    stop containerd
    unmount_under "$NODE_DIR"
    if ((holder)); then
        if [[ -x "${KUBE_PROXY_BIN:-}" ]]; then
            "$KUBE_PROXY_BIN" --cleanup >>"$NODE_DIR/logs/kube-proxy.log" 2>&1 || true
        fi
        network_down
        cgroups_down
        host_files_down
        rm -f "$HOST_DIR/owner"
        rmdir "$HOST_DIR" 2>/dev/null || true
    fi
    remove_node_dir
    log "real node stopped; host changes undone"
}

cmd_stop() {
    local c="${1:-}"
    [[ " ${COMPONENTS[*]} " == *" $c "* ]] || die "stop takes one of: ${COMPONENTS[*]}"
    stop "$c"
    if [[ "$c" == kube-proxy ]]; then
        load_binaries
        "$KUBE_PROXY_BIN" --cleanup >>"$NODE_DIR/logs/kube-proxy.log" 2>&1 || true
    fi
}

cmd_env() {
    load_binaries
    local v
    for v in NODE_NAME NODE_IP CLUSTER_CIDR NODE_POD_CIDR BRIDGE BRIDGE_IP SERVICE_CIDR \
        KUBERNETES_SERVICE_IP SINK CLUSTER_DOMAIN NODE_TIER_LABEL NODE_TAINT_KEY NODE_DIR \
        KUBELET_BIN KUBE_PROXY_BIN COREDNS_BIN; do
        printf '%s=%q\n' "$v" "${!v}"
    done
    printf 'PAUSE_IMAGE=%q\n' "docker.io/local/pause:$(archive_tag "$PAUSE_ARCHIVE")"
    printf 'NODECHECK_IMAGE=%q\n' "docker.io/local/nodecheck:$(archive_tag "$NODECHECK_ARCHIVE")"
    local holder=""
    [[ "$(owner)" == "$(me)" ]] && holder=1
    printf 'HOLDS_REAL_NODE=%q\n' "$holder"
}

case "${1:-}" in
    check) cmd_check ;;
    install) cmd_install ;;
    up) cmd_up ;;
    down) cmd_down ;;
    stop) shift; cmd_stop "$@" ;;
    import-images) shift; cmd_import_images "$@" ;;
    owner) holder_name ;;
    env) cmd_env ;;
    *) sed -n '3,26p' "$0" >&2; exit 2 ;;
esac
