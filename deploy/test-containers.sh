#!/usr/bin/env bash
# deploy/test-containers.sh: build the real Dockerfile and run the real compose files, for real.
#
#   bash deploy/test-containers.sh          # from a fresh clone, as root (or with sudo)
#
# No Docker engine is needed: it uses Debian's podman (runtime runc) and podman-compose. What it
# does, in order, each phase timed:
#   1. installs what it needs (podman, runc, debootstrap, hey, curl; podman-compose, pinned, from
#      PyPI into a venv under $STATE, because Debian's 1.0.3 mangles exec-form healthchecks);
#   2. builds stand-ins for the public base images once per machine and caches them in podman's
#      store under the public names (debian:bookworm-slim by debootstrap, rust:1-slim-bookworm
#      with this machine's Rust toolchain and CA bundle, redis and haproxy from Debian's
#      packages); an image of that name that exists already (pulled, or cached) is kept;
#   3. checks that cargo reaches its registry inside a build, then builds the Dockerfile
#      unchanged (--network=host so cargo reaches the registry, --format docker so HEALTHCHECK
#      is kept);
#   4. runs docker-compose.yml and checks the health check, the demo flow, the backend's
#      isolation, the hardening, a graceful stop and the JSON logs;
#   5. runs deploy/compose.fleet.yml (HAProxy, three replicas, Redis, the backend) and checks a
#      shared quota, failover when a replica stops, the Redis failure policy and a rolling restart.
# It prints PASS, FAIL or KNOWN (a documented limitation, not a failure) per check and a summary,
# exits non-zero on any FAIL, and removes its containers and networks on exit.
#
# Environment: AUTHGATE_PORT (host port on 127.0.0.1, default 8080, or the next free one),
# RUN_FLEET=0 (skip the fleet), NO_CACHE=1 (build the image without the layer cache),
# AUTHGATE_CTR_STATE (cache folder, default /var/cache/authgate-containers), DEBIAN_MIRROR
# (default: the bookworm mirror in this machine's apt sources), KEEP_WORK=1 (keep the logs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

STATE=${AUTHGATE_CTR_STATE:-/var/cache/authgate-containers}
PODMAN_COMPOSE_VERSION=1.6.0
# Bump when a stand-in recipe below changes: cached stand-ins with another recipe are rebuilt.
STANDIN_RECIPE=1
RUN_FLEET=${RUN_FLEET:-1}
IMAGE=authgate:local
SINGLE=authgate
FLEET=authgate-fleet
WORK=$(mktemp -d /tmp/authgate-ctr.XXXXXX)
chmod 700 "$WORK"

# ------------------------------------------------------------------------------------------------
# Output, timing, results
# ------------------------------------------------------------------------------------------------
RESULTS=()
PHASES=()
FAILS=0
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
log() { printf '%s\n' "$*"; }
record() { # STATUS NAME DETAIL SECONDS
  local line
  line=$(printf '%-5s %s: %s [%ss]' "$1" "$2" "$3" "$4")
  log "$line"
  RESULTS+=("$line")
  if [ "$1" = FAIL ]; then FAILS=$((FAILS + 1)); fi
}
# check NAME FUNCTION [ARGS...]: the function sets DETAIL and returns 0 (PASS), 1 (FAIL) or
# 3 (KNOWN).
check() {
  local name=$1 start rc=0
  shift
  start=$(now)
  DETAIL=""
  "$@" || rc=$?
  case $rc in
    0) record PASS "$name" "$DETAIL" "$(since "$start")" ;;
    3) record KNOWN "$name" "$DETAIL" "$(since "$start")" ;;
    *) record FAIL "$name" "$DETAIL" "$(since "$start")" ;;
  esac
}
PHASE_START=""
PHASE_NAME=""
phase() {
  phase_end
  PHASE_NAME=$1
  PHASE_START=$(now)
  log ""
  log "== $PHASE_NAME"
}
phase_end() {
  if [ -n "$PHASE_NAME" ]; then
    local took
    took=$(since "$PHASE_START")
    log "-- $PHASE_NAME: ${took}s"
    PHASES+=("$(printf '%8ss  %s' "$took" "$PHASE_NAME")")
    PHASE_NAME=""
  fi
}
die() {
  record FAIL "${PHASE_NAME:-setup}" "$*" 0
  exit 1
}

# ------------------------------------------------------------------------------------------------
# Cleanup
# ------------------------------------------------------------------------------------------------
BG_PIDS=()
remove_project() { # PROJECT: every container, pod and network compose made for it
  local project=$1 ids
  ids=$(podman ps -aq --filter "label=io.podman.compose.project=$project" 2>/dev/null || true)
  if [ -n "$ids" ]; then
    # shellcheck disable=SC2086
    podman rm -f -t 3 --depend $ids >/dev/null 2>&1 || true
  fi
  ids=$(podman pod ls -q --filter "label=io.podman.compose.project=$project" 2>/dev/null || true)
  if [ -n "$ids" ]; then
    # shellcheck disable=SC2086
    podman pod rm -f $ids >/dev/null 2>&1 || true
  fi
  ids=$(podman network ls -q --filter "label=io.podman.compose.project=$project" 2>/dev/null || true)
  if [ -n "$ids" ]; then
    # shellcheck disable=SC2086
    podman network rm -f $ids >/dev/null 2>&1 || true
  fi
}
cleanup() {
  local rc=$?
  set +e
  for pid in "${BG_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  if command -v podman >/dev/null 2>&1; then
    remove_project "$SINGLE"
    remove_project "$FLEET"
  fi
  if [ "${KEEP_WORK:-0}" = 1 ]; then
    log "logs kept in $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------------------------------------
# 1. What the script needs
# ------------------------------------------------------------------------------------------------
phase "install: podman, runc, debootstrap, hey, podman-compose $PODMAN_COMPOSE_VERSION"
SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null 2>&1 || die "run as root (rootful podman, debootstrap, apt-get)"
  SUDO="sudo -E"
  log "re-running as root with sudo"
  exec sudo -E bash "$0" "$@"
fi
missing=()
for tool in podman:podman runc:runc debootstrap:debootstrap hey:hey curl:curl \
  aardvark-dns:aardvark-dns netavark:netavark catatonit:catatonit; do
  cmd=${tool%%:*}
  pkg=${tool##*:}
  case $cmd in
    aardvark-dns | netavark) [ -x "/usr/lib/podman/$cmd" ] || missing+=("$pkg") ;;
    catatonit) [ -x /usr/bin/catatonit ] || [ -x /usr/libexec/podman/catatonit ] || missing+=("$pkg") ;;
    *) command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg") ;;
  esac
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >"$WORK/apt.log" 2>&1 ||
    { tail -20 "$WORK/apt.log"; die "apt-get install ${missing[*]} failed"; }
fi
mkdir -p "$STATE"

# This machine's podman needs three settings (no Docker engine here): runc (crun fails on hybrid
# cgroups), explicit ulimits below the host's hard limits, and file-based events and logs (no
# systemd or journald). They go in a containers.conf of this script's own, not the machine's.
cat >"$STATE/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
log_driver = "k8s-file"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
export CONTAINERS_CONF="$STATE/containers.conf"
podman --version

PC_VENV="$STATE/podman-compose-$PODMAN_COMPOSE_VERSION"
if [ ! -x "$PC_VENV/bin/podman-compose" ]; then
  PY=python3
  if ! python3 -m venv "$WORK/venv-probe" >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
    PY=/usr/bin/python3
  fi
  rm -rf "$PC_VENV"
  "$PY" -m venv "$PC_VENV"
  "$PC_VENV/bin/pip" install -q --disable-pip-version-check "podman-compose==$PODMAN_COMPOSE_VERSION" ||
    die "pip install podman-compose==$PODMAN_COMPOSE_VERSION failed"
fi
PODMAN_COMPOSE="$PC_VENV/bin/podman-compose"
"$PODMAN_COMPOSE" --version 2>/dev/null | head -1
PYTHON="$PC_VENV/bin/python"

# ------------------------------------------------------------------------------------------------
# 2. Stand-ins for the public base images, once per machine
# ------------------------------------------------------------------------------------------------
phase "base images (stand-ins, cached per machine)"
DEBIAN_IMAGE=docker.io/library/debian:bookworm-slim
RUST_IMAGE=docker.io/library/rust:1-slim-bookworm
REDIS_IMAGE=docker.io/library/redis:7-bookworm
HAPROXY_IMAGE=docker.io/library/haproxy:2.6-bookworm
HOST_RUSTC=$(rustc --version 2>/dev/null || echo none)
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

debian_mirror() {
  if [ -n "${DEBIAN_MIRROR:-}" ]; then
    echo "$DEBIAN_MIRROR"
    return
  fi
  local uri=""
  if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
    uri=$(awk 'tolower($1)=="uris:" { u=$2 } tolower($1)=="suites:" { for (i=2;i<=NF;i++) if ($i=="bookworm" && u!="") { print u; exit } }' \
      /etc/apt/sources.list.d/*.sources)
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(sed -E 's/\[[^]]*\]//' /etc/apt/sources.list | awk '$1=="deb" && $3=="bookworm" { print $2; exit }')
  fi
  echo "$uri"
}

# standin_current IMAGE [RUSTC]: true when IMAGE exists and is either not one of our stand-ins
# (a real pulled image is used as is) or one built by the current recipe (and toolchain).
standin_current() {
  podman image exists "$1" || return 1
  local recipe rustc
  recipe=$(podman image inspect "$1" --format '{{ index .Config.Labels "io.authgate.standin" }}' 2>/dev/null || true)
  case $recipe in
    "" | "<no value>") return 0 ;;
    "$STANDIN_RECIPE") ;;
    *) return 1 ;;
  esac
  if [ $# -gt 1 ]; then
    rustc=$(podman image inspect "$1" --format '{{ index .Config.Labels "io.authgate.rustc" }}' 2>/dev/null || true)
    [ "$rustc" = "$2" ] || return 1
  fi
}

build_debian() {
  local mirror rootfs
  mirror=$(debian_mirror)
  [ -n "$mirror" ] || die "no bookworm mirror in the apt sources; set DEBIAN_MIRROR"
  rootfs="$WORK/rootfs"
  nice debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 ||
    { tail -20 "$WORK/debootstrap.log"; die "debootstrap failed"; }
  # What bookworm-slim leaves out: package caches and lists, documentation, man pages, locales.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/usr/share/locale/* "$rootfs"/var/log/*.log
  mkdir -p "$rootfs/etc/dpkg/dpkg.cfg.d"
  printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
    'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' \
    'path-exclude /usr/share/locale/*' >"$rootfs/etc/dpkg/dpkg.cfg.d/slim"
  tar -C "$rootfs" -c . | podman import \
    --change 'CMD ["bash"]' --change "LABEL io.authgate.standin=$STANDIN_RECIPE" \
    - "$DEBIAN_IMAGE" >/dev/null 2>>"$WORK/podman.log"
  rm -rf "$rootfs"
}

# standin_build IMAGE DIR [podman build options]: DIR/Containerfile, built on the host network
# (apt and cargo reach their mirrors) with the Debian stand-in as FROM.
standin_build() {
  local image=$1 dir=$2
  shift 2
  nice podman build --format docker --network=host --pull=never \
    --label "io.authgate.standin=$STANDIN_RECIPE" "$@" -t "$image" "$dir" >"$dir/build.log" 2>&1 ||
    { tail -20 "$dir/build.log"; die "building the stand-in $image failed"; }
}

build_rust() {
  # rust:1-slim-bookworm: bookworm-slim with gcc, libc6-dev, CA certificates and rustup's stable
  # toolchain at RUSTUP_HOME=/usr/local/rustup, CARGO_HOME=/usr/local/cargo, as the real image.
  local toolchain rustup dir=$WORK/standin-rust
  toolchain=$(rustc --print sysroot 2>/dev/null || true)
  rustup=$(command -v rustup || true)
  if [ -z "$toolchain" ] || [ ! -x "$toolchain/bin/cargo" ]; then
    die "no Rust toolchain on this machine (rustc --print sysroot)"
  fi
  [ -n "$rustup" ] || die "no rustup on this machine"
  rustup=$(readlink -f "$rustup")
  [ -f "$CA_BUNDLE" ] || die "no CA bundle at $CA_BUNDLE"
  mkdir -p "$dir"
  cat >"$dir/Containerfile" <<EOF
FROM $DEBIAN_IMAGE
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates gcc libc6-dev \\
 && apt-get clean && rm -rf /var/lib/apt/lists/*
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo \\
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# The toolchain, rustup and this machine's CA bundle (the registries are reached through TLS that
# needs it) come in as read-only build volumes, not through the build context.
RUN set -eu; tc=\$RUSTUP_HOME/toolchains/stable-x86_64-unknown-linux-gnu; \\
    mkdir -p \$tc \$CARGO_HOME/bin; \\
    cp -a /mnt/toolchain/bin /mnt/toolchain/lib /mnt/toolchain/libexec /mnt/toolchain/etc \$tc/; \\
    cp /mnt/rustup \$CARGO_HOME/bin/rustup; \\
    for b in cargo rustc rustdoc; do ln -s rustup \$CARGO_HOME/bin/\$b; done; \\
    printf 'version = "12"\ndefault_toolchain = "stable-x86_64-unknown-linux-gnu"\nprofile = "minimal"\nauto_self_update = "disable"\n' > \$RUSTUP_HOME/settings.toml; \\
    cp /mnt/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt; \\
    chmod -R a+w \$RUSTUP_HOME \$CARGO_HOME; \\
    cargo --version; rustc --version
EOF
  standin_build "$RUST_IMAGE" "$dir" --label "io.authgate.rustc=$HOST_RUSTC" \
    -v "$toolchain:/mnt/toolchain:ro" -v "$rustup:/mnt/rustup:ro" \
    -v "$CA_BUNDLE:/mnt/ca-certificates.crt:ro"
}

build_redis() {
  # redis: Debian's redis-server (7.0; authgate's store needs 6.2 or newer), user redis, /data.
  local dir=$WORK/standin-redis
  mkdir -p "$dir"
  cat >"$dir/Containerfile" <<EOF
FROM $DEBIAN_IMAGE
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \\
 && apt-get clean && rm -rf /var/lib/apt/lists/* \\
 && mkdir -p /data && chown redis:redis /data
WORKDIR /data
EXPOSE 6379
CMD ["redis-server"]
EOF
  standin_build "$REDIS_IMAGE" "$dir"
}

build_haproxy() {
  # haproxy: Debian's haproxy 2.6, run as the official image runs it (user haproxy, master-worker
  # in the foreground, config at /usr/local/etc/haproxy/haproxy.cfg, SIGUSR1 to stop softly).
  local dir=$WORK/standin-haproxy
  mkdir -p "$dir"
  cat >"$dir/Containerfile" <<EOF
FROM $DEBIAN_IMAGE
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends haproxy \\
 && apt-get clean && rm -rf /var/lib/apt/lists/* \\
 && mkdir -p /usr/local/etc/haproxy
USER haproxy
STOPSIGNAL SIGUSR1
CMD ["haproxy", "-W", "-db", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
EOF
  standin_build "$HAPROXY_IMAGE" "$dir"
}

base_image() { # NAME IMAGE BUILDER [RUSTC]
  local name=$1 image=$2 builder=$3 start
  shift 3
  start=$(now)
  if standin_current "$image" "$@"; then
    record PASS "base image $name" "cached: $image" "$(since "$start")"
  else
    "$builder"
    record PASS "base image $name" "built: $image ($(image_mb "$image") MB)" "$(since "$start")"
  fi
}
image_mb() { podman image inspect "$1" --format '{{.Size}}' | awk '{ printf "%.1f", $1 / 1000000 }'; }

base_image debian:bookworm-slim "$DEBIAN_IMAGE" build_debian
base_image rust:1-slim-bookworm "$RUST_IMAGE" build_rust "$HOST_RUSTC"
if [ "$RUN_FLEET" = 1 ]; then
  base_image redis:7-bookworm "$REDIS_IMAGE" build_redis
  base_image haproxy:2.6-bookworm "$HAPROXY_IMAGE" build_haproxy
fi

# ------------------------------------------------------------------------------------------------
# 3. The image, from the Dockerfile as it is
# ------------------------------------------------------------------------------------------------
phase "image build (Dockerfile, unchanged)"
registry_probe() {
  local dir=$WORK/probe
  mkdir -p "$dir"
  cat >"$dir/Containerfile" <<EOF
FROM $RUST_IMAGE
RUN cargo new --quiet --vcs none /tmp/probe && cd /tmp/probe \\
 && printf 'itoa = "1"\n' >> Cargo.toml && cargo fetch --quiet
EOF
  if podman build --network=host --pull=never --no-cache -t authgate-registry-probe:tmp "$dir" \
    >"$dir/build.log" 2>&1; then
    podman rmi authgate-registry-probe:tmp >/dev/null 2>&1 || true
    DETAIL="cargo fetch inside a build reached the registry"
  else
    DETAIL="cargo fetch inside a build failed: $(tail -3 "$dir/build.log" | tr '\n' ' ')"
    return 1
  fi
}
check "cargo reaches the registry inside a build" registry_probe
[ "$FAILS" = 0 ] || die "the builder cannot reach the crate registry (CA bundle? network?)"

build_image() {
  local cache=()
  if [ "${NO_CACHE:-0}" = 1 ]; then cache=(--no-cache); fi
  if nice podman build --format docker --network=host --pull=never "${cache[@]}" \
    -t "$IMAGE" -f Dockerfile . >"$WORK/image-build.log" 2>&1; then
    local cached
    cached=$(grep -c -- '--> Using cache' "$WORK/image-build.log" || true)
    DETAIL="$IMAGE built from Dockerfile ($cached cached steps; log: image-build.log)"
  else
    tail -25 "$WORK/image-build.log"
    DETAIL="podman build failed"
    return 1
  fi
}
check "image builds from the Dockerfile" build_image
[ "$FAILS" = 0 ] || die "the image did not build"

image_report() {
  local size base health
  size=$(image_mb "$IMAGE")
  base=$(image_mb "$DEBIAN_IMAGE")
  health=$(podman image inspect "$IMAGE" --format '{{json .Config.Healthcheck}}')
  DETAIL="$IMAGE is $size MB ($base MB of it the debian:bookworm-slim base); user $(podman image inspect "$IMAGE" --format '{{.Config.User}}')"
  [ "$health" != null ] || { DETAIL="$DETAIL; the HEALTHCHECK was dropped"; return 1; }
}
check "image size and metadata" image_report

# ------------------------------------------------------------------------------------------------
# Helpers for running compose projects
# ------------------------------------------------------------------------------------------------
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
PORT=${AUTHGATE_PORT:-8080}
if ! port_free "$PORT"; then
  for candidate in $(seq 18080 18180); do
    if port_free "$candidate"; then
      log "port $PORT is taken on 127.0.0.1; using $candidate"
      PORT=$candidate
      break
    fi
  done
fi
export AUTHGATE_PUBLISH="127.0.0.1:$PORT"
BASE="http://127.0.0.1:$PORT"
BETTER_AUTH_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export BETTER_AUTH_SECRET
export RUST_LOG=info

compose() { # PROJECT FILE ARGS...: podman-compose, its chatter to the work log
  local project=$1 file=$2
  shift 2
  timeout 300 "$PODMAN_COMPOSE" --in-pod=false -p "$project" -f "$file" "$@" >>"$WORK/compose.log" 2>&1
}
ctr() { # PROJECT SERVICE -> container name
  podman ps -a --filter "label=io.podman.compose.project=$1" \
    --filter "label=com.docker.compose.service=$2" --format '{{.Names}}' | head -1
}
health() { podman inspect "$1" --format '{{.State.Health.Status}}' 2>/dev/null || echo none; }

# No systemd here, so podman's own health-check timers do not run: this loop plays the engine's
# scheduler and runs each running container's health check every 2 s (podman healthcheck run
# executes the image's or the compose file's test and records the result).
start_health_ticker() {
  local project=$1
  (
    while :; do
      for c in $(podman ps --filter "label=io.podman.compose.project=$project" --format '{{.Names}}' 2>/dev/null); do
        timeout 10 podman healthcheck run "$c" >/dev/null 2>&1 || true
      done
      sleep 2
    done
  ) &
  BG_PIDS+=($!)
}
wait_for() { # SECONDS WANT COMMAND...: until COMMAND prints WANT
  local deadline=$((SECONDS + $1)) want=$2
  shift 2
  while [ $SECONDS -lt $deadline ]; do
    [ "$("$@")" = "$want" ] && return 0
    sleep 0.5
  done
  return 1
}
wait_healthy() { wait_for "$2" healthy health "$1"; } # CONTAINER SECONDS
# compose's depends_on `condition: service_healthy` (podman-compose ignores it with podman 4.3):
# start the services in dependency order, each group once the previous one is healthy.
up_staged() { # PROJECT FILE "SERVICES" "SERVICES" ...
  local project=$1 file=$2 group service name
  shift 2
  for group in "$@"; do
    # shellcheck disable=SC2086
    compose "$project" "$file" up -d --no-deps $group || return 1
    for service in $group; do
      name=$(ctr "$project" "$service")
      [ -n "$name" ] || { log "no container for $service"; return 1; }
      if [ "$(podman inspect "$name" --format '{{json .Config.Healthcheck}}')" != null ]; then
        wait_healthy "$name" 90 || { log "$name is $(health "$name")"; podman logs --tail 20 "$name" 2>&1; return 1; }
      fi
    done
  done
}
# http METHOD URL [curl args...] -> the status code
http() {
  local method=$1 url=$2
  shift 2
  curl -s -o "$WORK/body" -w '%{http_code}' -m 10 -X "$method" "$@" "$url" || echo 000
}
expect_status() { # WANT METHOD URL [curl args]
  local want=$1 got
  shift
  got=$(http "$@")
  DETAIL="$1 ${2#"$BASE"} -> $got (want $want)"
  [ "$got" = "$want" ]
}
token() { # CONTAINER SUB: `authgate token` inside the running gateway, same config and secret
  podman exec "$1" authgate token --config /etc/authgate/gateway.toml --sub "$2"
}
# admin_get CONTAINER PATH: GET on the admin listener inside the container (bash /dev/tcp).
admin_get() {
  # shellcheck disable=SC2016 # expanded by the container's bash
  timeout 10 podman exec "$1" bash -c 'exec 3<>/dev/tcp/127.0.0.1/9090 && printf "GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n" "$1" >&3 && cat <&3' _ "$2"
}
metric_sum() { # CONTAINER METRIC [LABEL-FILTER]: the sum of a metric's samples
  admin_get "$1" /metrics | awk -v m="$2" -v f="${3:-}" \
    '($1 == m || index($1, m "{") == 1) && (f == "" || index($1, f)) { s += $2 } END { printf "%d", s }'
}
main_pid() { # CONTAINER: the host pid of the process under the container's init
  local init
  init=$(podman inspect "$1" --format '{{.State.Pid}}')
  awk '{ print $1 }' /proc/"$init"/task/*/children 2>/dev/null | head -1
}
probe_tcp() { # NETWORK HOST PORT: can a container on NETWORK connect to HOST:PORT?
  podman run --rm --network "$1" --read-only --cap-drop ALL --entrypoint bash "$IMAGE" \
    -c 'timeout 3 bash -c "exec 3<>/dev/tcp/$1/$2"' _ "$2" "$3" >/dev/null 2>&1
}
net_ip() { # CONTAINER NETWORK
  podman inspect "$1" --format "{{ (index .NetworkSettings.Networks \"$2\").IPAddress }}"
}

# ------------------------------------------------------------------------------------------------
# 4. docker-compose.yml
# ------------------------------------------------------------------------------------------------
phase "compose: docker-compose.yml up (gateway + task backend, 127.0.0.1:$PORT)"
remove_project "$SINGLE"
start_health_ticker "$SINGLE"
compose_up_single() {
  up_staged "$SINGLE" docker-compose.yml tasks gateway || { DETAIL="compose up failed (see compose.log)"; return 1; }
  DETAIL="tasks healthy, then gateway started"
}
check "docker-compose.yml starts" compose_up_single
GW=$(ctr "$SINGLE" gateway)
TASKS=$(ctr "$SINGLE" tasks)
{ [ -n "$GW" ] && [ -n "$TASKS" ]; } || die "docker-compose.yml did not start (see compose.log)"

phase "checks: docker-compose.yml"
gateway_healthy() {
  local start=$SECONDS
  wait_healthy "$GW" 60 || { DETAIL="$GW is $(health "$GW") after 60 s"; return 1; }
  DETAIL="the image's HEALTHCHECK (GET /healthz on 127.0.0.1:9090) turned healthy after $((SECONDS - start)) s more"
}
check "gateway HEALTHCHECK turns healthy" gateway_healthy

ALICE=$(token "$GW" alice)
BOB=$(token "$GW" bob)
check "demo: alice creates a task -> 201" expect_status 201 POST "$BASE/api/alice/tasks" \
  -H "Authorization: Bearer $ALICE" -H 'content-type: application/json' -d '{"title":"buy milk"}'
list_tasks() {
  expect_status 200 GET "$BASE/api/alice/tasks" -H "Authorization: Bearer $ALICE" || return 1
  grep -q 'buy milk' "$WORK/body" || { DETAIL="$DETAIL, but the list lacks the new task"; return 1; }
}
check "demo: alice lists her tasks -> 200" list_tasks
check "demo: no token -> 401" expect_status 401 GET "$BASE/api/alice/tasks"
check "demo: bob on alice's tasks -> 403" expect_status 403 GET "$BASE/api/alice/tasks" -H "Authorization: Bearer $BOB"
check "demo: dot-segment trick -> 400" expect_status 400 GET "$BASE/api/bob/../alice/tasks" --path-as-is -H "Authorization: Bearer $BOB"

backend_publishes_nothing() {
  local published
  published=$(podman port "$TASKS" 2>&1)
  DETAIL="podman port tasks: ${published:-nothing published} (exposed only: $(podman inspect "$TASKS" --format '{{range $p, $b := .NetworkSettings.Ports}}{{$p}} {{end}}'))"
  [ -z "$published" ]
}
check "backend publishes no host port" backend_publishes_nothing
EDGE_NET=${SINGLE}_edge
BACKEND_NET=${SINGLE}_backend
backend_not_on_edge() {
  local ip
  ip=$(net_ip "$TASKS" "$BACKEND_NET")
  # The probe can fail: from the backend network it connects.
  probe_tcp "$BACKEND_NET" tasks 8000 || { DETAIL="control probe from $BACKEND_NET failed; the probe is broken"; return 1; }
  if probe_tcp "$EDGE_NET" tasks 8000; then DETAIL="a container on edge reached tasks:8000"; return 1; fi
  if probe_tcp "$EDGE_NET" "$ip" 8000; then DETAIL="a container on edge reached $ip:8000"; return 1; fi
  DETAIL="from edge: tasks:8000 and $ip:8000 refused or timed out; from backend (control): reached"
}
check "backend unreachable from the edge network" backend_not_on_edge
backend_from_host() {
  local ip
  ip=$(net_ip "$TASKS" "$BACKEND_NET")
  if curl -s -o /dev/null -m 3 "http://$ip:8000/health"; then
    DETAIL="the host itself connects to the backend's container address $ip:8000: an internal network's bridge has a host address (Podman; Docker too, but in 25.0.0). Documented in deploy/README.md, What is exposed; containers on edge cannot"
    return 3
  fi
  DETAIL="the host cannot connect to $ip:8000"
}
check "backend from the host by container address" backend_from_host

hardening() {
  local pid status uid gid caps nnp ro write
  pid=$(main_pid "$GW")
  [ -n "$pid" ] || { DETAIL="no process under the container's init"; return 1; }
  status=/proc/$pid/status
  uid=$(awk '/^Uid:/ { print $2, $3, $4, $5 }' "$status")
  gid=$(awk '/^Gid:/ { print $2, $3, $4, $5 }' "$status")
  caps=$(awk '/^Cap(Inh|Prm|Eff|Bnd|Amb):/ { printf "%s=%s ", $1, $2 }' "$status")
  nnp=$(awk '/^NoNewPrivs:/ { print $2 }' "$status")
  ro=$(podman inspect "$GW" --format '{{.HostConfig.ReadonlyRootfs}}')
  write=$(podman exec "$GW" bash -c 'echo x > /probe 2>&1 || true; echo x > /etc/authgate/probe 2>&1 || true' 2>&1 | head -1)
  DETAIL="$(cat /proc/"$pid"/comm) uid=[$uid] gid=[$gid] ${caps}NoNewPrivs=$nnp read-only root=$ro ($write)"
  [ "$uid" = "10001 10001 10001 10001" ] && [ "$gid" = "10001 10001 10001 10001" ] &&
    ! grep -qE '^Cap(Inh|Prm|Eff|Bnd|Amb):[[:space:]]*0*[1-9a-f]' "$status" &&
    [ "$nnp" = 1 ] && [ "$ro" = true ] && [[ $write == *"Read-only file system"* ]]
}
check "gateway: uid 10001, read-only root, no capabilities, no-new-privileges" hardening

graceful_stop() {
  local grace start took code ka line closed=no
  grace=$(awk -F'"' '/^shutdown_grace[[:space:]]*=/ { print $2 }' deploy/gateway.compose.toml)
  grace=${grace:-30s}
  # An idle keep-alive client connection is open while the gateway stops.
  exec {ka}<>"/dev/tcp/127.0.0.1/$PORT"
  printf 'GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n' >&"$ka"
  IFS= read -r -t 5 line <&"$ka" || true
  start=$(now)
  podman stop -t 35 "$GW" >>"$WORK/podman.log" 2>&1
  took=$(since "$start")
  local rc=0
  while :; do IFS= read -r -t 2 line <&"$ka" || { rc=$?; break; }; done
  if [ "$rc" -le 128 ]; then closed=yes; fi # EOF, not a timeout
  exec {ka}>&-
  code=$(podman inspect "$GW" --format '{{.State.ExitCode}}')
  DETAIL="podman stop took ${took}s (shutdown_grace $grace, stop_grace_period 35s), exit code $code, idle keep-alive connection closed: $closed"
  [ "$code" = 0 ] && awk -v t="$took" -v g="${grace%s}" 'BEGIN { exit !(t < g) }' &&
    podman logs "$GW" 2>&1 | grep -q 'shutting down: waiting for in-flight requests'
}
check "podman stop: graceful exit within shutdown_grace" graceful_stop

json_logs() { # CONTAINER
  podman logs "$1" >"$WORK/$1.log" 2>&1
  DETAIL=$("$PYTHON" - "$WORK/$1.log" <<'EOF'
import json, sys
lines = [l for l in open(sys.argv[1], encoding="utf-8", errors="replace").read().splitlines() if l.strip()]
bad, access, statuses = [], 0, set()
for number, line in enumerate(lines, 1):
    try:
        record = json.loads(line)
        if not isinstance(record, dict):
            raise ValueError("not an object")
    except ValueError as err:
        bad.append(f"line {number}: {err}: {line[:80]!r}")
        continue
    if record.get("target") == "authgate::access":
        access += 1
        statuses.add(str(record.get("status")))
print(f"{len(lines)} lines, {len(bad)} not JSON, {access} access lines (statuses {' '.join(sorted(statuses))})")
for b in bad[:3]:
    print(b)
sys.exit(1 if bad or not lines or not access else 0)
EOF
  )
}
check "gateway logs: every line is JSON" json_logs "$GW"

short_secret_refused() {
  local out code=0
  out=$(podman run --rm --read-only --cap-drop ALL -e BETTER_AUTH_SECRET=0123456789abcdef "$IMAGE" 2>&1) || code=$?
  DETAIL="a 16-byte secret: exit $code, $(printf '%s' "$out" | grep -m1 -o 'needs at least [0-9]* bytes' || printf '%s' "${out:0:120}")"
  [ "$code" = 2 ] && [[ $out == *"needs at least 32 bytes"* ]]
}
check "gateway refuses a short HS256 secret at start" short_secret_refused

phase "compose: docker-compose.yml down"
compose "$SINGLE" docker-compose.yml down -t 10 || true
remove_project "$SINGLE"

# ------------------------------------------------------------------------------------------------
# 5. The replicated fleet
# ------------------------------------------------------------------------------------------------
if [ "$RUN_FLEET" = 1 ]; then
  FLEET_FILE=deploy/compose.fleet.yml
  phase "fleet: compose.fleet.yml up (HAProxy, 3 replicas, Redis, task backend)"
  remove_project "$FLEET"
  start_health_ticker "$FLEET"
  # HAProxy's view of a replica: UP, DOWN, ... from its stats page (inside the lb container).
  lb_status() { # SERVER
    timeout 10 podman exec "$LB" bash -c 'exec 3<>/dev/tcp/127.0.0.1/8404 && printf "GET /stats;csv HTTP/1.0\r\n\r\n" >&3 && cat <&3' 2>/dev/null |
      "$PYTHON" -c '
import sys
raw = sys.stdin.buffer.read()
head, _, body = raw.partition(b"\r\n\r\n")
if b"chunked" in head.lower():  # HAProxy answers chunked, even to HTTP/1.0
    out = b""
    while body:
        size, _, rest = body.partition(b"\r\n")
        size = int(size.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            break
        out, body = out + rest[:size], rest[size + 2:]
    body = out
for line in body.decode(errors="replace").splitlines():
    f = line.split(",")
    if len(f) > 17 and f[0] == "replicas" and f[1] == sys.argv[1]:
        print(f[17])
' "$1"
  }
  wait_lb_up() { wait_for "$2" UP lb_status "$1"; } # SERVER SECONDS
  fleet_up() {
    up_staged "$FLEET" "$FLEET_FILE" "tasks redis" "gateway-1 gateway-2 gateway-3" lb ||
      { DETAIL="compose up failed (see compose.log)"; return 1; }
    LB=$(ctr "$FLEET" lb)
    local g
    for g in gateway-1 gateway-2 gateway-3; do
      wait_lb_up "$g" 30 || { DETAIL="HAProxy does not see $g UP ($(lb_status "$g"))"; return 1; }
    done
    DETAIL="tasks and redis healthy, then three healthy replicas, then HAProxy with all three UP"
  }
  check "fleet starts" fleet_up
  [ -n "${LB:-}" ] || die "the fleet did not start (see compose.log)"
  G=("$(ctr "$FLEET" gateway-1)" "$(ctr "$FLEET" gateway-2)" "$(ctr "$FLEET" gateway-3)")
  REDIS=$(ctr "$FLEET" redis)

  phase "checks: fleet"
  served() { # -> "n1 n2 n3": requests answered by each replica so far
    local g out=""
    for g in "${G[@]}"; do out="$out $(metric_sum "$g" authgate_requests_total)"; done
    echo "${out# }"
  }
  # count_statuses N URL TOKEN -> "2xx 429 other", N sequential requests through HAProxy
  count_statuses() {
    local i code ok=0 limited=0 other=0
    for i in $(seq 1 "$1"); do
      code=$(curl -s -o /dev/null -w '%{http_code}' -m 10 -H "Authorization: Bearer $3" "$2" || echo 000)
      case $code in 2??) ok=$((ok + 1)) ;; 429) limited=$((limited + 1)) ;; *) other=$((other + 1)) ;; esac
    done
    echo "$ok $limited $other"
  }
  fallbacks() { # -> the store fallbacks of all replicas together
    local g n=0
    for g in "${G[@]}"; do n=$((n + $(metric_sum "$g" authgate_store_fallbacks_total))); done
    echo "$n"
  }
  # Each replica's first requests open its Redis connection and its upstream pool: warm them
  # (two authenticated requests per replica, another user), so the quota check measures the
  # shared limit, not a replica's first connection. Without it, one run here saw a replica's
  # first two store operations time out (decided locally) and the quota let 22 through.
  WARM=$(count_statuses 6 "$BASE/api/warmup/tasks" "$(token "${G[0]}" warmup)")
  log "warm-up through HAProxy (2xx 429 other): $WARM; store fallbacks so far: $(fallbacks)"
  quota_shared() {
    local user tok before after counts ok limited other fb0 fb1
    user="quota-$RANDOM$RANDOM"
    tok=$(token "${G[0]}" "$user")
    read -ra before <<<"$(served)"
    fb0=$(fallbacks)
    counts=$(count_statuses 30 "$BASE/api/$user/tasks" "$tok")
    fb1=$(fallbacks)
    read -ra after <<<"$(served)"
    read -r ok limited other <<<"$counts"
    DETAIL="30 requests for one user (quota 20/h): $ok 2xx, $limited 429, $other other; per replica $((after[0] - before[0]))/$((after[1] - before[1]))/$((after[2] - before[2])); store fallbacks meanwhile: $((fb1 - fb0))"
    [ "$ok" = 20 ] && [ "$limited" = 10 ] && [ "$other" = 0 ] &&
      [ $((after[0] - before[0])) -gt 0 ] && [ $((after[1] - before[1])) -gt 0 ] && [ $((after[2] - before[2])) -gt 0 ]
  }
  check "fleet: a per-user quota holds across replicas" quota_shared

  # A task for the load user, read back under load (GET: HAProxy may retry it).
  LOAD_TOKEN=$(token "${G[0]}" load)
  curl -s -m 10 -X POST -H "Authorization: Bearer $LOAD_TOKEN" -H 'content-type: application/json' \
    -d '{"title":"load"}' "$BASE/api/load/tasks" >"$WORK/load-task.json"
  LOAD_ID=$("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$WORK/load-task.json")
  LOAD_URL="$BASE/api/load/tasks/$LOAD_ID"
  # load SECONDS OUT: hey in the background, bounded: 4 workers at 10 requests/s each at most.
  load() {
    hey -z "$1s" -c 4 -q 10 -t 10 -H "Authorization: Bearer $LOAD_TOKEN" "$LOAD_URL" >"$2" 2>&1 &
    LOAD_PID=$!
    BG_PIDS+=("$LOAD_PID")
  }
  # load_summary OUT -> "total 2xx 5xx other errors"
  load_summary() {
    awk '
      /Status code distribution:/ { s = 1; next }
      /Error distribution:/ { s = 0; e = 1; next }
      s && /\[[0-9]+\]/ { gsub(/[\[\]]/, "", $1); n = $2; t += n
                          if ($1 ~ /^2/) ok += n; else if ($1 ~ /^5/) x += n; else o += n }
      e && /\[[0-9]+\]/ { gsub(/[\[\]]/, "", $1); err += $1 }
      END { printf "%d %d %d %d %d", t + err, ok, x, o, err }' "$1"
  }
  replica_failover() {
    local out=$WORK/hey-failover.txt start took code total ok five other errs
    load 15 "$out"
    sleep 4
    start=$(now)
    podman stop -t 15 "${G[1]}" >>"$WORK/podman.log" 2>&1
    took=$(since "$start")
    code=$(podman inspect "${G[1]}" --format '{{.State.ExitCode}}')
    wait "$LOAD_PID" || true
    read -r total ok five other errs <<<"$(load_summary "$out")"
    DETAIL="gateway-2 stopped under load (stop ${took}s, exit $code): $total requests, $ok 2xx, $five 5xx, $other other, $errs client errors"
    podman start "${G[1]}" >>"$WORK/podman.log" 2>&1
    { wait_healthy "${G[1]}" 90 && wait_lb_up gateway-2 90; } || { DETAIL="$DETAIL; gateway-2 did not come back"; return 1; }
    [ "$total" -gt 0 ] && [ "$ok" = "$total" ] && [ "$code" = 0 ]
  }
  check "fleet: stopping a replica under load loses no request" replica_failover

  redis_policy() {
    local user tok counts ok limited other i fb up ready detail="" bad=0
    podman stop -t 10 "$REDIS" >>"$WORK/podman.log" 2>&1
    sleep 2
    user="redis-$RANDOM$RANDOM"
    tok=$(token "${G[0]}" "$user")
    counts=$(count_statuses 70 "$BASE/api/$user/tasks" "$tok")
    read -r ok limited other <<<"$counts"
    detail="Redis stopped, on_error = \"local\": 70 requests for one user (quota 20/h) gave $ok 2xx, $limited 429, $other other (want 60 = 3 replicas x 20, then 429)"
    [ "$ok" = 60 ] && [ "$limited" = 10 ] && [ "$other" = 0 ] || bad=1
    for i in 0 1 2; do
      fb=$(metric_sum "${G[$i]}" authgate_store_fallbacks_total 'policy="local"')
      up=$(metric_sum "${G[$i]}" authgate_store_up)
      ready=$(admin_get "${G[$i]}" /readyz | head -1 | awk '{ print $2 }')
      detail="$detail; gateway-$((i + 1)): fallbacks{local}=$fb store_up=$up readyz=$ready"
      [ "$fb" -gt 0 ] && [ "$up" = 0 ] && [ "$ready" = 200 ] || bad=1
    done
    DETAIL=$detail
    [ $bad = 0 ]
  }
  check "fleet: Redis down applies on_error = local" redis_policy

  # Redis comes back with another address, which each replica must look up: on this machine the
  # container DNS can take 25 s or more to answer one replica right after a restart (see
  # deploy/README.md), so the replicas get 90 s, and the time they took is reported.
  redis_recovers() {
    local g deadline up_all back
    podman start "$REDIS" >>"$WORK/podman.log" 2>&1
    wait_healthy "$REDIS" 60 || { DETAIL="redis did not come back healthy"; return 1; }
    back=$(now)
    deadline=$((SECONDS + 90))
    while [ $SECONDS -lt $deadline ]; do
      up_all=1
      for g in "${G[@]}"; do [ "$(metric_sum "$g" authgate_store_up)" = 1 ] || up_all=0; done
      [ $up_all = 1 ] && break
      sleep 1
    done
    [ $up_all = 1 ] || { DETAIL="authgate_store_up is not 1 on every replica 90 s after Redis returned"; return 1; }
    local took
    took=$(since "$back")
    # And the quota is shared again: a fresh user gets exactly 20.
    local user tok ok limited other
    user="back-$RANDOM$RANDOM"
    tok=$(token "${G[0]}" "$user")
    read -r ok limited other <<<"$(count_statuses 30 "$BASE/api/$user/tasks" "$tok")"
    DETAIL="store_up=1 on all replicas ${took}s after Redis was healthy again; a fresh user then got $ok 2xx, $limited 429, $other other (want 20/10/0)"
    [ "$ok" = 20 ] && [ "$limited" = 10 ] && [ "$other" = 0 ]
  }
  check "fleet: Redis back, limits shared again without a restart" redis_recovers

  # The load runs from before the first stop until 3 s after the last replica is back UP in
  # HAProxy (hey stops and reports on SIGINT; it is bounded at 150 s anyway). A replica waits for
  # its backend's name to resolve before /readyz says ready, which the container DNS here can
  # delay by 25 s or more: each replica gets 90 s to come back.
  rolling_restart() {
    local out=$WORK/hey-rolling.txt i g start total ok five other errs steps=""
    load 150 "$out"
    sleep 3
    start=$(now)
    for i in 0 1 2; do
      g=gateway-$((i + 1))
      podman stop -t 15 "${G[$i]}" >>"$WORK/podman.log" 2>&1
      podman start "${G[$i]}" >>"$WORK/podman.log" 2>&1
      { wait_healthy "${G[$i]}" 90 && wait_lb_up "$g" 90; } || { DETAIL="$g did not come back UP"; kill -INT "$LOAD_PID" 2>/dev/null; wait "$LOAD_PID" || true; return 1; }
      steps="$steps $g:$(since "$start")s"
    done
    local rolled
    rolled=$(since "$start")
    sleep 3
    if ! kill -INT "$LOAD_PID" 2>/dev/null; then
      DETAIL="the load ended before the rolling restart did (${rolled}s)"
      return 1
    fi
    wait "$LOAD_PID" || true
    read -r total ok five other errs <<<"$(load_summary "$out")"
    local dns="" g_i
    for g_i in 0 1 2; do
      dns="$dns gateway-$((g_i + 1)):$(metric_sum "${G[$g_i]}" authgate_upstream_dns_lookups_total 'result="failed"')/$(metric_sum "${G[$g_i]}" authgate_upstream_dns_stale_total)"
    done
    DETAIL="rolling restart in ${rolled}s (each back UP at:$steps) under load: $total requests, $ok 2xx, $five 5xx, $other other, $errs client errors; upstream DNS lookups failed / connections made to the last known address, per replica since its restart:$dns"
    [ "$total" -gt 0 ] && [ "$five" = 0 ] && [ "$errs" = 0 ]
  }
  check "fleet: rolling restart under load gives zero 5xx" rolling_restart

  fleet_logs() {
    local i detail="" bad=0
    for i in 0 1 2; do
      json_logs "${G[$i]}" || bad=1
      detail="$detail gateway-$((i + 1)): $DETAIL;"
    done
    DETAIL=${detail# }
    [ $bad = 0 ]
  }
  check "fleet: replica logs are JSON" fleet_logs

  phase "fleet: down"
  compose "$FLEET" "$FLEET_FILE" down -t 15 || true
  remove_project "$FLEET"
fi

phase_end
log ""
log "== summary"
for line in "${PHASES[@]}"; do log "$line"; done
log ""
for line in "${RESULTS[@]}"; do log "$line"; done
passes=$(printf '%s\n' "${RESULTS[@]}" | grep -c '^PASS' || true)
knowns=$(printf '%s\n' "${RESULTS[@]}" | grep -c '^KNOWN' || true)
log ""
log "known limitations (not failures): $knowns"
log "containers: $passes passed, $FAILS failed"
[ "$FAILS" = 0 ]
