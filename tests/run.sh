#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: virtualenv with requirements_dev.txt, Debian's systemd
# package for `systemd-analyze verify` if it is missing (needs root), then ruff, mypy and pytest.
# Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
venv=${CLIP_VENV:-.venv}
deploy/ensure_venv.sh "$venv" requirements_dev.txt
if ! command -v systemd-analyze >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd) >/dev/null
  else
    echo "systemd-analyze is missing and we are not root: the unit-file test will be skipped" >&2
  fi
fi
# Lint (with import order) and types first: they take seconds and fail fast.
"$venv/bin/ruff" check .
"$venv/bin/mypy"
exec "$venv/bin/python" -m pytest "$@"
