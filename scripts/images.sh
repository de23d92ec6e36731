#!/usr/bin/env bash
# make images: build modeldeploy-operator:<version> and modelserver:<version> from
# operator/Dockerfile and server_image/Dockerfile with buildah, without a Docker daemon
# and without a registry. The Python base image is made here from Debian's packages
# (mmdebstrap) and handed to the Dockerfiles as PYTHON_IMAGE; their default stays the
# public image users build on. Details and the output contract: docs/images.md.
#
# Everything lands under ${MODELDEPLOY_CACHE:-~/.cache/modeldeploy}:
#   images/base/            the Debian rootfs tarball and its package list
#   images/NAME-VERSION.tar each image as an OCI archive whose only reference is VERSION
#                           (for ctr images import --base-name; see docs/images.md)
#   images/manifest.tsv     one line per image: name, tag, archive, bytes, image id (tabs)
#   buildah/                buildah's storage (--root/--runroot), its layer cache, runc state
#
# With --when-possible (make test), a machine that cannot build (not Linux, no root or
# password-less sudo) skips with one line instead of failing, unless CI=true.
#
# Environment: MODELDEPLOY_CA_BUNDLE (default /etc/ssl/certs/ca-certificates.crt) is
# mounted read-only into the build so that downloads trust what the host trusts (e.g. a
# TLS-intercepting proxy); it never ends up in an image. MODELDEPLOY_DEBIAN_MIRROR is
# handed to mmdebstrap as its mirror (default: mmdebstrap's own, with updates and security).
set -euo pipefail
shopt -s inherit_errexit

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}
OUT=$CACHE/images
STORE=$CACHE/buildah
HOST_CA=${MODELDEPLOY_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
# Where both bases keep their CA bundle; the host's is mounted over it during builds.
IMAGE_CA=/etc/ssl/certs/ca-certificates.crt

SUITE=bookworm
# What python:3.11-slim-bookworm carries besides its interpreter: CA certificates, netbase
# and tzdata; python3.11-venv brings ensurepip, which the Dockerfiles' builders use.
BASE_PACKAGES=(python3.11 python3.11-venv python3 ca-certificates netbase tzdata)
# shellcheck disable=SC2016 # the customize hook's $1 (the chroot) is expanded by mmdebstrap
MMDEBSTRAP_OPTS=(
    --variant=minbase
    --format=tar
    # merged /usr without the usrmerge package, which would pull in Perl (~50 MB)
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
    --aptopt='Acquire::Languages "none"'
    # as Debian's slim images: no documentation or translations
    --dpkgopt='path-exclude=/usr/share/doc/*'
    --dpkgopt='path-include=/usr/share/doc/*/copyright'
    --dpkgopt='path-exclude=/usr/share/man/*'
    --dpkgopt='path-exclude=/usr/share/info/*'
    --dpkgopt='path-exclude=/usr/share/locale/*'
    # the runtime provides /dev; the build host's resolver and name stay out of the image
    --skip=output/dev
    --customize-hook='rm -f "$1/etc/resolv.conf"; : > "$1/etc/hostname"'
)
BASE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { echo "images: $*" >&2; }
die() {
    log "$*"
    exit 1
}

ensure_tools() {
    local missing=() tool
    for tool in buildah mmdebstrap umoci runc; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    if [[ $(id -u) -ne 0 ]] && ! command -v sudo >/dev/null 2>&1; then
        die "please install ${missing[*]} (Debian/Ubuntu: apt-get install ${missing[*]})"
    fi
    log "installing ${missing[*]} from Debian's packages"
    as_root apt-get update -qq >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
}

# run_logged LOG COMMAND...: the command's output goes to LOG, and its tail to stderr if it fails.
run_logged() {
    local logfile=$1
    shift
    if ! "$@" >"$logfile" 2>&1; then
        tail -n 40 "$logfile" >&2
        die "$1 failed; full log: $logfile"
    fi
}

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

project_version() {
    local version
    version=$(sed -n 's/^version = "\([^"]*\)"$/\1/p' "$ROOT/pyproject.toml" | head -n1)
    [[ -n $version ]] || die "no version = \"...\" line in $ROOT/pyproject.toml"
    echo "$version"
}

bah() {
    buildah --root "$STORE/root" --runroot "$STORE/runroot" --storage-driver overlay "$@"
}

# buildah keeps a blob-info cache under /var/lib/containers whatever --root says: remove
# what this run created there, and nothing that was there before.
host_leftovers=()
note_host_paths() {
    local path
    for path in /var/lib/containers /var/lib/containers/cache; do
        [[ -e $path ]] || host_leftovers+=("$path")
    done
}
clean_host_paths() {
    local path
    for path in "${host_leftovers[@]}"; do
        [[ -e $path ]] && as_root rm -rf "$path"
    done
    return 0
}

base_key() {
    printf '%s\n' "$SUITE" "${BASE_PACKAGES[@]}" "${MMDEBSTRAP_OPTS[@]}" "$BASE_PATH" \
        "${MODELDEPLOY_DEBIAN_MIRROR:-}" | sha256sum | cut -c1-12
}

# Prints the local base image's reference, building the rootfs and the image if missing.
ensure_base() {
    local key tarball ref ctr mirror=() started
    key=$(base_key)
    tarball=$OUT/base/python3.11-$SUITE-$key.tar
    ref=localhost/modeldeploy-python:3.11-$SUITE-$key
    if bah inspect --type image "$ref" >/dev/null 2>&1; then
        echo "$ref"
        return 0
    fi
    if [[ ! -s $tarball ]]; then
        [[ -n ${MODELDEPLOY_DEBIAN_MIRROR:-} ]] && mirror=("$MODELDEPLOY_DEBIAN_MIRROR")
        log "building a minimal $SUITE rootfs with Python 3.11 from Debian's packages (mmdebstrap, ~1-3 min)"
        started=$SECONDS
        mkdir -p "$OUT/base"
        run_logged "$STORE/logs/mmdebstrap.log" mmdebstrap "${MMDEBSTRAP_OPTS[@]}" \
            --include="$(IFS=,; echo "${BASE_PACKAGES[*]}")" "$SUITE" "$tarball.partial" "${mirror[@]}"
        tar -xOf "$tarball.partial" ./var/lib/dpkg/status \
            | awk '/^Package:/ {p=$2} /^Version:/ {print p, $2}' >"$OUT/base/python3.11-$SUITE-$key.packages"
        mv "$tarball.partial" "$tarball"
        log "rootfs ready in $((SECONDS - started)) s: $tarball"
    fi
    log "importing the rootfs as $ref"
    ctr=$(bah from scratch)
    bah add --quiet "$ctr" "$tarball" / >/dev/null
    bah config --env PATH="$BASE_PATH" --env LANG=C.UTF-8 --cmd python3 \
        --label org.opencontainers.image.description="Debian $SUITE with Python 3.11 from Debian's packages" \
        "$ctr"
    bah commit --quiet --rm "$ctr" "$ref" >/dev/null
    echo "$ref"
}

# The commit that last changed what goes into the images, so a commit elsewhere in the
# repository does not make a new image; "-dirty" when those paths have local changes.
source_revision() {
    local paths=(pyproject.toml uv.lock README.md .dockerignore operator/modeldeploy
        server_image/modelserver operator/Dockerfile server_image/Dockerfile)
    local revision
    revision=$(git -C "$ROOT" log -1 --format=%H -- "${paths[@]}" 2>/dev/null) || revision=""
    [[ -n $revision ]] || {
        echo "unknown"
        return 0
    }
    if [[ -n $(git -C "$ROOT" status --porcelain -- "${paths[@]}" 2>/dev/null) ]]; then
        revision+="-dirty"
    fi
    echo "$revision"
}

# build NAME DOCKERFILE BASE_REF: builds localhost/NAME:VERSION, prints its image id.
build() {
    local name=$1 dockerfile=$2 base=$3 started ca_args=()
    if [[ -s $HOST_CA ]]; then
        ca_args=(--volume "$HOST_CA:$IMAGE_CA:ro"
            --build-arg "SSL_CERT_FILE=$IMAGE_CA" --build-arg "PIP_CERT=$IMAGE_CA")
    fi
    local common=(--layers --pull=never --network host --runtime-flag "root=$STORE/runc"
        --file "$ROOT/$dockerfile" --build-arg "PYTHON_IMAGE=$base" "${ca_args[@]}")
    log "building $name:$VERSION from $dockerfile (log: $STORE/logs/$name.log)"
    started=$SECONDS
    # The `project` stage first, tagged, so that pruning keeps it as the layer cache of the
    # next build; the full build then finds it cached.
    run_logged "$STORE/logs/$name.log" bah build "${common[@]}" --target project \
        --tag "localhost/$name-project:cache" "$ROOT"
    run_logged "$STORE/logs/$name.log" bah build "${common[@]}" \
        --build-arg "VERSION=$VERSION" \
        --build-arg "REVISION=$REVISION" \
        --build-arg "CREATED=$CREATED" \
        --tag "localhost/$name:$VERSION" \
        "$ROOT"
    log "$name:$VERSION built in $((SECONDS - started)) s"
    bah images --noheading --no-trunc --format '{{.ID}}' "localhost/$name:$VERSION" | head -n1
}

# export NAME ID: writes the OCI archive unless the manifest says it already holds ID.
export_archive() {
    local name=$1 id=$2 archive=$OUT/$1-$VERSION.tar
    if [[ -s $archive && -f $OUT/manifest.tsv ]] \
        && awk -F'\t' -v n="$name" -v t="$VERSION" -v i="$id" \
            '$1 == n && $2 == t && $5 == i {found=1} END {exit !found}' "$OUT/manifest.tsv"; then
        log "$archive is up to date"
        return 0
    fi
    rm -f "$archive.partial"
    # The tag alone as the reference: ctr import --base-name needs it (a full name imports nothing).
    bah push --quiet "localhost/$name:$VERSION" "oci-archive:$archive.partial:$VERSION" >/dev/null
    mv "$archive.partial" "$archive"
    log "wrote $archive ($(du -h "$archive" | cut -f1))"
}

# prune EPOCH BASE: removes what older builds left behind (untagged images nothing builds
# on, created before EPOCH; base images and rootfs tarballs of other package lists), so the
# storage holds one generation of layers, not every build's.
prune() {
    local since=$1 base=$2 ref id created stale
    # Removing an image can leave its parent dangling: repeat until nothing old is left.
    while :; do
        stale=()
        while read -r id created; do
            if (($(date -d "$created" +%s) < since)); then stale+=("$id"); fi
        done < <(bah images --filter dangling=true --noheading --no-trunc \
            --format '{{.ID}} {{.CreatedAtRaw}}' | sed 's/ UTC$//')
        [[ ${#stale[@]} -eq 0 ]] && break
        bah rmi "${stale[@]}" >/dev/null || return 1
    done
    while read -r ref; do
        if [[ $ref == localhost/modeldeploy-python:* && $ref != "$base" ]]; then
            bah rmi "$ref" >/dev/null || return 1
        fi
    done < <(bah images --noheading --format '{{.Name}}:{{.Tag}}')
    find "$OUT/base" -maxdepth 1 -type f ! -name "*-${base##*-}.*" -delete
}

# Why this machine cannot build the images, or nothing when it can.
cannot_build() {
    if [[ $(uname -s) != Linux ]]; then
        echo "buildah builds need Linux; elsewhere build the Dockerfiles with docker (docs/images.md)"
    elif [[ $(id -u) -ne 0 ]] && ! sudo -n true 2>/dev/null; then
        echo "building images here needs root or password-less sudo (buildah, mmdebstrap)"
    fi
}

main() {
    local base operator_id server_id name run_started started=$SECONDS reason
    reason=$(cannot_build)
    if [[ -n $reason && ${1:-} == --when-possible && ${CI:-} != true ]]; then
        log "skipped: $reason; the image and node tests will skip too"
        return 0
    fi
    [[ -z $reason ]] || die "$reason"
    ensure_tools
    VERSION=$(project_version)
    REVISION=$(source_revision)
    CREATED=$(git -C "$ROOT" log -1 --format=%cI "${REVISION%-dirty}" 2>/dev/null || echo unknown)
    mkdir -p "$OUT" "$STORE/root" "$STORE/runroot" "$STORE/runc" "$STORE/tmp" "$STORE/logs"
    # Large temporary files of image copies stay in the cache, not in /var/tmp.
    export TMPDIR=$STORE/tmp
    exec 9>"$STORE/lock"
    if ! flock --nonblock 9; then
        log "waiting for another make images to finish"
        flock 9
    fi
    note_host_paths
    trap clean_host_paths EXIT

    run_started=$(date +%s)
    base=$(ensure_base)
    operator_id=$(build modeldeploy-operator operator/Dockerfile "$base")
    server_id=$(build modelserver server_image/Dockerfile "$base")
    export_archive modeldeploy-operator "$operator_id"
    export_archive modelserver "$server_id"

    {
        # lines of other images (scripts/node-tier-images.sh adds its own) stay
        if [[ -f $OUT/manifest.tsv ]]; then
            awk -F'\t' '$1 != "modeldeploy-operator" && $1 != "modelserver"' "$OUT/manifest.tsv"
        fi
        printf '%s\t%s\t%s\t%s\t%s\n' modeldeploy-operator "$VERSION" \
            "$OUT/modeldeploy-operator-$VERSION.tar" \
            "$(stat -c %s "$OUT/modeldeploy-operator-$VERSION.tar")" "$operator_id"
        printf '%s\t%s\t%s\t%s\t%s\n' modelserver "$VERSION" "$OUT/modelserver-$VERSION.tar" \
            "$(stat -c %s "$OUT/modelserver-$VERSION.tar")" "$server_id"
    } >"$OUT/manifest.tsv.partial"
    mv "$OUT/manifest.tsv.partial" "$OUT/manifest.tsv"
    prune "$run_started" "$base" || log "could not remove older layers from $STORE (they stay until the next run)"
    for name in modeldeploy-operator modelserver; do
        log "$name:$VERSION: $(bah images --noheading --format '{{.Size}}' "localhost/$name:$VERSION" | head -n1) unpacked, $(du -h "$OUT/$name-$VERSION.tar" | cut -f1) archive"
    done
    # The node tier's Prometheus and load generator (static Go programs), under this lock.
    MODELDEPLOY_IMAGES_LOCK_HELD=1 "$ROOT/scripts/node-tier-images.sh" "$@"
    log "done in $((SECONDS - started)) s; $OUT/manifest.tsv lists the archives"
}

main "$@"
