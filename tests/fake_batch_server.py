"""A loopback server implementing the OpenAI Files and Batches APIs, with scripted faults (for tests).

Endpoints: ``POST /v1/files`` (multipart upload), ``GET /v1/files/{id}/content``, ``POST /v1/batches``,
``GET /v1/batches/{id}``, ``GET /v1/batches`` (newest first), ``POST /v1/batches/{id}/cancel``,
``GET /v1/models``, and live ``POST /v1/completions`` and ``/v1/chat/completions`` (kept in ``live``).

A batch moves one state further on each retrieve: validating, in_progress (half its lines counted),
finalizing, then its end state with output and error files. ``faults`` maps the index of a batch
creation (0, 1, ...) to what happens to that batch:

- "failed": the batch fails validation (``errors.data`` lists one error on line 1);
- "expired": the first half of its lines are answered, the rest go to the error file as ``batch_expired``;
- "expired_silent": as "expired", but the unfinished lines appear in no file;
- "errors": lines whose ``custom_id`` is in ``error_ids`` go to the error file with HTTP 500;
- "cancelled": the batch is cancelled.

Every creation is kept in ``creations`` (its metadata and input lines); ``hold = True`` keeps every
batch in_progress (for killing a client while it polls).
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


def default_answer(body: dict) -> str:
    """The answer text: the last word of the prompt (or user message), upper-cased."""
    prompt = body.get("prompt") or body["messages"][-1]["content"]
    return " " + prompt.split()[-1].upper()


class FakeBatchServer:
    def __init__(self, faults=None, error_ids=(), answer=default_answer, model_id="fake", steps_to_finish=3):
        self.faults = dict(faults or {})
        self.error_ids = set(error_ids)
        self.answer = answer
        self.model_id = model_id
        self.steps_to_finish = steps_to_finish
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.creations: list[dict] = []
        self.live: list[dict] = []
        self.retrieves = 0
        self.hold = False  # True: batches stay in_progress, whatever the polls
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                url = urlparse(self.path)
                parts = url.path.rstrip("/").split("/")
                with fake.lock:
                    if url.path.endswith("/models"):
                        return self._send(200, {"object": "list", "data": [{"id": fake.model_id, "object": "model"}]})
                    if len(parts) == 5 and parts[2] == "files" and parts[4] == "content":
                        if parts[3] not in fake.files:
                            return self._send(404, {"error": {"message": "no such file"}})
                        return self._raw(200, fake.files[parts[3]], "application/octet-stream")
                    if parts[-1] == "batches":
                        q = parse_qs(url.query)
                        data = sorted(fake.batches.values(), key=lambda b: b["_n"], reverse=True)
                        if "after" in q:
                            ids = [b["id"] for b in data]
                            data = data[ids.index(q["after"][0]) + 1:] if q["after"][0] in ids else []
                        limit = int(q.get("limit", ["20"])[0])
                        page = [fake._public(b) for b in data[:limit]]
                        return self._send(200, {"object": "list", "data": page, "has_more": len(data) > limit,
                                                "first_id": page[0]["id"] if page else None,
                                                "last_id": page[-1]["id"] if page else None})
                    if len(parts) == 4 and parts[2] == "batches" and parts[3] in fake.batches:
                        fake.retrieves += 1
                        batch = fake.batches[parts[3]]
                        fake._advance(batch)
                        return self._send(200, fake._public(batch))
                self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self):
                url = urlparse(self.path)
                parts = url.path.rstrip("/").split("/")
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with fake.lock:
                    if parts[-1] == "completions":  # live requests (the client's identity probe)
                        body = json.loads(raw)
                        fake.live.append(body)
                        line = {"custom_id": "live", "url": url.path, "body": body}
                        return self._send(200, fake._response(line)["response"]["body"])
                    if parts[-1] == "files":
                        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                            b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + raw)
                        fields = {p.get_param("name", header="content-disposition"): p for p in msg.iter_parts()}
                        content = fields["file"].get_payload(decode=True)
                        purpose = fields["purpose"].get_payload(decode=True).decode()
                        fid = f"file-{len(fake.files)}"
                        fake.files[fid] = content
                        return self._send(200, {"id": fid, "object": "file", "bytes": len(content), "created_at": 0,
                                                "filename": fields["file"].get_filename(), "purpose": purpose,
                                                "status": "processed"})
                    if parts[-1] == "batches":
                        body = json.loads(raw)
                        n = len(fake.creations)
                        lines = [json.loads(x) for x in fake.files[body["input_file_id"]].decode().splitlines() if x.strip()]
                        fake.creations.append({"metadata": body.get("metadata"), "lines": lines,
                                               "endpoint": body["endpoint"]})
                        bid = f"batch_{n}"
                        fake.batches[bid] = {
                            "id": bid, "object": "batch", "endpoint": body["endpoint"], "errors": None,
                            "input_file_id": body["input_file_id"], "completion_window": body["completion_window"],
                            "status": "validating", "output_file_id": None, "error_file_id": None,
                            "created_at": int(time.time()), "metadata": body.get("metadata"),
                            "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
                            "_n": n, "_step": 0, "_fault": fake.faults.get(n), "_lines": lines,
                        }
                        return self._send(200, fake._public(fake.batches[bid]))
                    if len(parts) == 5 and parts[2] == "batches" and parts[4] == "cancel":
                        batch = fake.batches[parts[3]]
                        batch["status"] = "cancelling"
                        batch["_fault"] = "cancelled"
                        return self._send(200, fake._public(batch))
                self._send(404, {"error": {"message": f"no route {self.path}"}})

            def _send(self, code, obj):
                self._raw(code, json.dumps(obj).encode(), "application/json")

            def _raw(self, code, payload, ctype):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        class QuietServer(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # a client killed mid-request is part of the script

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @staticmethod
    def _public(batch: dict) -> dict:
        return {k: v for k, v in batch.items() if not k.startswith("_")}

    def _response(self, line: dict) -> dict:
        body = line["body"]
        text = self.answer(body)
        chat = line["url"].endswith("/chat/completions")
        choice = {"index": 0, "finish_reason": "stop",
                  **({"message": {"role": "assistant", "content": text.strip()}} if chat else {"text": text})}
        prompt = body.get("prompt") or body["messages"][-1]["content"]
        return {"id": f"req_{line['custom_id']}", "custom_id": line["custom_id"], "error": None, "response": {
            "status_code": 200, "request_id": "r", "body": {
                "id": "cmpl", "object": "chat.completion" if chat else "text_completion", "model": body["model"],
                "choices": [choice],
                "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": 3,
                          "total_tokens": len(prompt.split()) + 3}}}}

    def _file(self, lines: list[dict]) -> str | None:
        if not lines:
            return None
        fid = f"file-{len(self.files)}"
        self.files[fid] = "".join(json.dumps(x) + "\n" for x in lines).encode()
        return fid

    def _advance(self, batch: dict) -> None:
        if batch["status"] in ("completed", "failed", "expired", "cancelled"):
            return
        fault, lines = batch["_fault"], batch["_lines"]
        counts = batch["request_counts"]
        if fault == "failed":
            batch["status"] = "failed"
            batch["errors"] = {"object": "list", "data": [
                {"code": "invalid_request", "message": "scripted validation failure", "param": "body", "line": 1}]}
            return
        if fault == "cancelled":
            batch["status"] = "cancelled"
            return
        if self.hold:
            batch["status"] = "in_progress"
            return
        batch["_step"] += 1
        if batch["_step"] == 1:
            batch["status"] = "in_progress"
            return
        if batch["_step"] < self.steps_to_finish:
            batch["status"] = "finalizing" if batch["_step"] == self.steps_to_finish - 1 else "in_progress"
            counts["completed"] = len(lines) // 2
            return
        ok, bad = [], []
        half = len(lines) // 2 if fault in ("expired", "expired_silent") else len(lines)
        for k, line in enumerate(lines):
            if k >= half:
                if fault == "expired":
                    bad.append({"id": f"req_{k}", "custom_id": line["custom_id"], "response": None,
                                "error": {"code": "batch_expired", "message": "This request could not be executed before the completion window expired."}})
            elif fault == "errors" and line["custom_id"] in self.error_ids:
                bad.append({"id": f"req_{k}", "custom_id": line["custom_id"], "error": None, "response": {
                    "status_code": 500, "request_id": "r", "body": {"error": {"message": "scripted server error",
                                                                               "type": "server_error"}}}})
            else:
                ok.append(self._response(line))
        counts["completed"] = len(ok)
        counts["failed"] = len(bad)
        batch["status"] = "expired" if fault in ("expired", "expired_silent") else "completed"
        batch["output_file_id"] = self._file(ok)
        batch["error_file_id"] = self._file(bad)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
