#!/usr/bin/env bash
# The whole test suite: installs what the build needs, starts a real Kafka
# broker for the integration tests, runs every test, and stops the broker.
#
#   scripts/test.sh            # everything
#   scripts/test.sh -- NAME    # only tests whose name contains NAME
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

need_apt=()
for pkg in cmake pkg-config g++ libcurl4-openssl-dev libssl-dev zlib1g-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null; then
  echo "cargo is missing: install Rust (https://rustup.rs) first" >&2
  exit 2
fi

scripts/kafka.sh fetch
# --sasl: a SASL_PLAINTEXT listener too, for the authentication tests.
eval "$(scripts/kafka.sh start --sasl)"
trap 'scripts/kafka.sh stop --dir "$KAFKA_DIR" --purge >/dev/null 2>&1 || true' EXIT
export VIGIL_TEST_BROKERS="$KAFKA_BROKERS" VIGIL_TEST_SASL_BROKERS="$KAFKA_SASL_BROKERS"
echo "kafka broker on $KAFKA_BROKERS" >&2

filter=()
if [ "${1:-}" = "--" ]; then
  shift
  filter=("$@")
fi
cargo test --workspace --release --locked -- "${filter[@]}"
cargo run --release --locked -q -p vigil -- rules test rules
