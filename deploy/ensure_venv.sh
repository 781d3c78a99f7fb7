#!/usr/bin/env bash
# ensure_venv.sh VENV REQUIREMENTS: create the virtualenv VENV if it is missing, and install REQUIREMENTS
# into it when they changed since the last install. Used by start_clip_service.sh and tests/run.sh.
set -euo pipefail
venv=$1
requirements=$2
project=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)

if [ ! -x "$venv/bin/python" ]; then
  echo "creating virtualenv $venv" >&2
  "${PYTHON:-python3}" -m venv "$venv"
fi
stamp="$venv/.installed-$(basename "$requirements")"
digest=$(cat "$project"/requirements*.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
  echo "installing $requirements into $venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$project/$requirements"
  echo "$digest" > "$stamp"
fi
