#!/usr/bin/env bash
# One command from a fresh Debian/Ubuntu machine (as root, or through sudo) to a working hpcgym:
#   ./bootstrap.sh main   install everything, build the images, then play the lite incidents with the
#                         gold, noop and random policies and print the leaderboard
#   ./bootstrap.sh test   install everything, then run the whole test suite and the lite gold check
# Installing is idempotent: apt packages, a Docker engine for the Docker backend, and .venv at the repo root.
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(
    bubblewrap buildah mmdebstrap docker.io fuse-overlayfs fuse3 uidmap zstd tar util-linux
    python3 python3-venv python3-pip ca-certificates
)
# Only the tests need a real Slurm (the fleet test starts its own private munged, slurmctld and slurmd).
TEST_APT_PACKAGES=(slurm-wlm slurm-client munge)

log() { printf '\033[1m[bootstrap]\033[0m %s\n' "$*" >&2; }

install_packages() {
    local missing=()
    for package in "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
    done
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
    fi
}

start_docker() {
    # The Docker backend needs an engine; this machine kind has none running. No iptables, no bridge:
    # builds run with network none, and hpcgym never publishes ports from it.
    if docker info >/dev/null 2>&1; then return; fi
    log "starting dockerd (log: /var/log/hpcgym-dockerd.log)"
    nohup dockerd --iptables=false --bridge=none >/var/log/hpcgym-dockerd.log 2>&1 &
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && return
        sleep 1
    done
    log "dockerd did not start; see /var/log/hpcgym-dockerd.log"
    exit 1
}

make_venv() {
    # The venv uses the first python3 >= 3.11 on PATH (Debian 12's own is 3.11).
    if [ ! -x .venv/bin/python ]; then
        log "creating .venv"
        python3 -m venv .venv
    fi
    .venv/bin/python -m pip install --quiet --upgrade pip
    # torch first, pinned to the CPU build this machine kind keeps on disk: a bare `torch` from the
    # training extra would pull a multi-GB CUDA build.
    .venv/bin/python -m pip install --quiet torch==2.13.0
    .venv/bin/python -m pip install --quiet -e '.[test,train]'
}

if [ "$(id -u)" -ne 0 ]; then
    exec sudo --preserve-env=PATH "$0" "$@"
fi

case "${1:-}" in
    main)
        install_packages "${APT_PACKAGES[@]}"; start_docker; make_venv
        .venv/bin/invoke build-images
        .venv/bin/invoke eval --lite --seeds 1 --policies gold,noop,random
        ;;
    test)
        install_packages "${APT_PACKAGES[@]}" "${TEST_APT_PACKAGES[@]}"; start_docker; make_venv
        .venv/bin/invoke build-images
        .venv/bin/invoke build-server-image    # the deployable container, for its smoke tests
        .venv/bin/invoke test --skip-build
        .venv/bin/invoke gold --lite --seeds 1
        ;;
    *)
        echo "usage: $0 main|test" >&2
        exit 2
        ;;
esac
