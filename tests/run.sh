#!/usr/bin/env bash
# Install what the tests need on a fresh Debian machine, then run them.
# Usage: bash tests/run.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# The browser tests drive Debian's Chromium (a test tool's own browser download
# is not used). Without it they skip, unless REQUIRE_BROWSER=1.
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

# The Redis engine's tests start Debian's redis-server on a free port (REQUIRE_REDIS=1
# makes its absence a failure instead of a skip).
if ! command -v redis-server >/dev/null && command -v apt-get >/dev/null; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi

# The scale-out tests put Debian's nginx in front of two nodes (REQUIRE_NGINX=1 makes
# its absence a failure instead of a skip).
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ] && command -v apt-get >/dev/null; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
fi

python3 -m pip install -q --disable-pip-version-check -e '.[test]'

# Node's eventsource package, a client in tests/test_tls.py (which skips only if npm is missing).
if command -v npm >/dev/null && [ ! -d tests/node/node_modules/eventsource ]; then
    (cd tests/node && npm ci --no-audit --no-fund --loglevel=error)
fi
exec python3 -m pytest "$@"
