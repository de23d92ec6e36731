#!/usr/bin/env bash
# Install the programs the end-to-end tests and benchmarks run, from Debian's packages,
# when they are missing: prometheus (a real server scraping real modelserver processes)
# and wrk (the load generator of make bench-server).
set -euo pipefail

missing=()
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -ne 0 ]] && ! command -v sudo >/dev/null 2>&1; then
    echo "ensure-tools: please install ${missing[*]} (Debian/Ubuntu: apt-get install ${missing[*]})" >&2
    exit 1
fi
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }
echo "ensure-tools: installing ${missing[*]} from Debian's packages" >&2
export DEBIAN_FRONTEND=noninteractive
as_root apt-get update -qq >/dev/null
# the package's service is never started: the tests run their own Prometheus on 127.0.0.1
as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
