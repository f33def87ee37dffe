#!/usr/bin/env bash
# Installs what building Vigil needs beyond Rust: librdkafka is compiled
# from source (cmake, a C/C++ compiler) against OpenSSL, zlib and libcurl's
# headers. Does nothing when they are all present; uses apt-get otherwise.
#
#   scripts/deps.sh
set -euo pipefail

need=()
for pkg in cmake pkg-config g++ libcurl4-openssl-dev libssl-dev zlib1g-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null; then
    echo "the build needs ${need[*]} (or your system's equivalents); install them by hand" >&2
    exit 2
  fi
  echo "installing ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null; then
  echo "cargo is missing: install Rust (https://rustup.rs) first" >&2
  exit 2
fi
