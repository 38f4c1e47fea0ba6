#!/usr/bin/env bash
# `make demo` (interim, until the local runtime lands): serve the tiny model, generate one image, drain.
set -euo pipefail
cd "$(dirname "$0")/.."
KNSD=.venv/bin/knsd
PORT=${PORT:-7860}
mkdir -p out
$KNSD serve --host 127.0.0.1 --port "$PORT" --log-level warning &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
echo "waiting for /readyz (model load + warm-up)..."
until curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null; do
  kill -0 $pid 2>/dev/null || { echo "knsd serve exited" >&2; exit 1; }
  sleep 0.2
done
curl -fs "http://127.0.0.1:$PORT/sdapi/v1/txt2img" -H 'content-type: application/json' \
  -d '{"prompt": "pretty dog", "steps": 20, "seed": 42}' -o out/response.json
.venv/bin/python - <<'PY'
import base64, json
body = json.load(open("out/response.json"))
open("out/demo.png", "wb").write(base64.b64decode(body["images"][0]))
print("wrote out/demo.png:", json.loads(body["info"])["infotexts"][0].replace("\n", " | "))
PY
kill -TERM $pid
wait $pid
echo "knsd serve drained and exited 0"
