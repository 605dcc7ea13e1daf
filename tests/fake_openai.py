"""A real OpenAI-compatible HTTP server on loopback that answers with scripted faults (for tests)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeOpenAI:
    """Serve ``/v1/completions`` and ``/v1/chat/completions``.

    ``script`` is a list of actions consumed one per request (then ``default``): "ok", "429",
    "500", "503", "bad_json", "truncated_json", "empty_choices", "length", ("slow", seconds).
    Every request body is kept in ``requests``; every Authorization header in ``auth``. ``text`` is
    the completion text, or a function of the request body that returns it. ``model_id`` is what
    ``GET /v1/models`` reports.
    """

    def __init__(self, script=None, default="ok", text=" Yes", model_id="fake"):
        self.script = list(script or [])
        self.model_id = model_id
        self.default = default
        self.text = text
        self.requests: list[dict] = []
        self.auth: list[str] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self._send(200, {"data": [{"id": fake.model_id}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with fake.lock:
                    fake.requests.append(body)
                    fake.auth.append(self.headers.get("Authorization", ""))
                    action = fake.script.pop(0) if fake.script else fake.default
                if isinstance(action, tuple) and action[0] == "slow":
                    time.sleep(action[1])
                    action = "ok"
                if action in ("429", "500", "503"):
                    headers = {"Retry-After": "0"} if action == "429" else {}
                    return self._send(int(action), {"error": {"message": f"scripted {action}"}}, headers)
                if action == "bad_json":
                    return self._raw(200, b"this is not json")
                if action == "truncated_json":
                    return self._raw(200, b'{"id": "x", "choices": [{"te')
                chat = self.path.endswith("/chat/completions")
                text = fake.text(body) if callable(fake.text) else fake.text
                text = text.strip() if chat else text
                finish = "length" if action == "length" else "stop"
                choices = [] if action == "empty_choices" else [
                    {"index": 0, "finish_reason": finish, **({"message": {"role": "assistant", "content": text}} if chat else {"text": text, "logprobs": None})}
                ]
                self._send(200, {
                    "id": "cmpl-1", "object": "chat.completion" if chat else "text_completion", "created": 0,
                    "model": body.get("model", "fake"), "choices": choices,
                    "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13},
                })

            def _send(self, code, obj, headers=None):
                self._raw(code, json.dumps(obj).encode(), headers)

            def _raw(self, code, payload, headers=None):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

        class QuietServer(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # a client that timed out and hung up mid-answer is part of the script

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
