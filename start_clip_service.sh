#!/usr/bin/env bash
# Start clip-vectorize: create the virtualenv if missing, install requirements_clip.txt, then run gunicorn
# (the same command the systemd unit runs). Settings come from the environment; see the README's table.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"
venv=${CLIP_VENV:-.venv}
deploy/ensure_venv.sh "$venv" requirements_clip.txt
exec "$venv/bin/gunicorn" --config deploy/gunicorn.conf.py
