#!/usr/bin/env bash
# The whole test suite: installs what the build needs, starts a real Kafka
# broker for the integration tests, runs every test, and stops the broker.
#
#   scripts/test.sh            # everything
#   scripts/test.sh -- NAME    # only tests whose name contains NAME
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

scripts/deps.sh
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
