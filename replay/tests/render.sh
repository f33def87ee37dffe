#!/usr/bin/env bash
# Renders a report in headless Chromium and saves a screenshot.
# Usage: render.sh REPORT.html SCREENSHOT.png
# Installs Debian's chromium package when no browser is on the PATH.
set -euo pipefail
html=$(realpath "$1")
png=$2
browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq chromium >/dev/null
  browser=$(command -v chromium)
fi
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
mkdir -p "$(dirname "$png")"
"$browser" --headless --no-sandbox --disable-gpu --disable-background-networking \
  --disable-component-update --disable-sync --no-first-run --user-data-dir="$profile" \
  --hide-scrollbars --screenshot="$png" --window-size=1280,2000 "file://$html" >/dev/null 2>&1
test -s "$png"
