#!/usr/bin/env bash
# Run the example chat on one machine: the Django pages on :8001 (runserver) and the
# websockets on :8000 (websockets_server, 2 workers, embedded broker).
# Users alice and bob (password "chat-demo") are created with the chat permission.
set -euo pipefail
cd "$(dirname "$0")"
python manage.py migrate --noinput
python manage.py create_chat_user alice chat-demo
python manage.py create_chat_user bob chat-demo
python manage.py runserver 127.0.0.1:8001 --noreload &
pages=$!
trap 'kill $pages 2>/dev/null || true' EXIT
echo "Open http://127.0.0.1:8001/ and log in as alice or bob (password chat-demo)."
python manage.py websockets_server -b 127.0.0.1:8000 -w "${WORKERS:-2}" --health 127.0.0.1:8002
