#!/usr/bin/env bash
# Run the example chat on one machine, on one port: runserver serves the pages and hands
# websocket upgrades to django-ws (2 workers, embedded broker), autoreloading both.
# Users alice and bob (password "chat-demo") are created with the chat permission.
set -euo pipefail
cd "$(dirname "$0")"
python manage.py migrate --noinput
python manage.py create_chat_user alice chat-demo
python manage.py create_chat_user bob chat-demo
echo "Open http://127.0.0.1:8000/ and log in as alice or bob (password chat-demo)."
exec python manage.py runserver 127.0.0.1:8000 --ws-workers "${WORKERS:-2}"
