#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: virtualenv with requirements_dev.txt, the Debian packages the
# end-to-end tests need (when root), then ruff, mypy and pytest.
# Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
venv=${CLIP_VENV:-.venv}
deploy/ensure_venv.sh "$venv" requirements_dev.txt
# Debian packages the end-to-end tests drive as users run them: systemd (systemd-analyze verify on the unit),
# nginx (replicas), chromium (the search page in a real browser) and a CJK font (so the page's screenshot shows
# Chinese). Installed when missing and we are root; otherwise the tests that need them say so and skip.
missing=()
for package in systemd nginx chromium fonts-wqy-microhei; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}") >/dev/null
  else
    echo "missing Debian packages ${missing[*]} and not root: the tests that need them will be skipped" >&2
  fi
fi
# Lint (with import order) and types first: they take seconds and fail fast.
"$venv/bin/ruff" check .
"$venv/bin/mypy"
exec "$venv/bin/python" -m pytest "$@"
