#!/usr/bin/env bash
# Set up paintbench for development and tests in ./.venv (the README's first command).
#   bash scripts/setup.sh            # Python environment (pinned torch, see constraints/ci.txt)
#   PAINTBENCH_BROWSER=1 bash ...    # also Debian's chromium for the leaderboard browser tests
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints/ci.txt -e ".[test,serve]"
if [ "${PAINTBENCH_BROWSER:-0}" = "1" ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "chromium is missing: install Debian's 'chromium' package for the browser tests" >&2
  fi
fi
.venv/bin/paintbench --version
