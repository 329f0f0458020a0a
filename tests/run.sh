#!/usr/bin/env bash
# Install what the test suite needs on a fresh Debian machine, then run it.
# Usage: bash tests/run.sh [pytest arguments]   (e.g. --soak for the long runs)
set -euo pipefail
cd "$(dirname "$0")/.."

# System tools: promtool (Prometheus) checks the dashboards' queries.
need=()
command -v promtool >/dev/null || need+=(prometheus)
if ((${#need[@]})); then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    else
        echo "note: not root, so ${need[*]} is not installed; the tests that need it are skipped" >&2
    fi
fi

python -m pip install -q --disable-pip-version-check -e '.[test,deploy]'
exec python -m pytest "$@"
