#!/usr/bin/env bash
# Spool's one entry point for a fresh Debian 12 machine (run as root, or with
# sudo available). Installs missing Debian packages (a no-op when present),
# configures and builds incrementally, then runs what was asked:
#
#   ./dev.sh demo [spool demo options]   the demo pipeline on a local PostgreSQL
#   ./dev.sh test [--sanitize]           the whole test suite (ASan+UBSan build with --sanitize)
#   ./dev.sh build                       just build (build/spool)
#   ./dev.sh bench NAME [args]           build and run bench/NAME
set -euo pipefail
cd "$(dirname "$0")"

packages=(
  g++ cmake ninja-build ccache pkg-config
  libcaf-dev libpq-dev libboost-json1.81-dev libspdlog-dev catch2 libcli11-dev
  libssl-dev # SHA-256 of uploaded assets (libcrypto)
  postgresql-15 postgresql-client-15
  ffmpeg espeak-ng sox fonts-dejavu-core python3 procps
  prometheus # promtool: the tests check the metrics exposition with Prometheus's own linter
  chromium chromium-driver python3-selenium # the status page's test in a real headless browser
)

install_missing() {
  local missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "dev.sh: installing ${missing[*]}" >&2
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >&2
}

build() { # build DIR [cmake args...]
  local dir=$1
  shift
  if [ ! -f "$dir/build.ninja" ]; then
    cmake -S . -B "$dir" -G Ninja "$@" >&2
  fi
  ninja -C "$dir" >&2
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  demo)
    install_missing
    build build -DCMAKE_BUILD_TYPE=Release
    exec ./build/spool demo "$@"
    ;;
  test)
    install_missing
    if [ "${1:-}" = "--sanitize" ]; then
      build build-asan -DCMAKE_BUILD_TYPE=Debug -DSPOOL_SANITIZE=ON
      dir=build-asan
    else
      build build -DCMAKE_BUILD_TYPE=Release
      dir=build
    fi
    ./$dir/spool db start >/dev/null # one cluster for the whole suite
    cd "$dir"
    exec ctest --output-on-failure -j2 --timeout 900
    ;;
  build)
    install_missing
    build build -DCMAKE_BUILD_TYPE=Release
    ;;
  bench)
    install_missing
    build build -DCMAKE_BUILD_TYPE=Release
    name=${1:?usage: ./dev.sh bench NAME [args]}
    shift
    exec "./build/bench_$name" "$@"
    ;;
  *)
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
