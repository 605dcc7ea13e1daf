"""A real OpenAI-compatible HTTP server on loopback that answers with scripted faults, simulated latency
and a capacity limit, and counts what it serves (for tests and benchmarks)."""

from __future__ import annotations

import json
import random
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

    Simulated serving (all optional):

    - ``latency``: seconds each answer takes once it is being served, or a function of the request
      body that returns them (e.g. seeded random latencies, so answers come back in shuffled order);
    - ``token_rate``: completion tokens per second added to the latency;
    - ``capacity``: at most this many requests served at once (the others wait their turn, as at a
      server with that many slots);
    - ``tokens="words"``: usage counts words (prompt: the prompt's, completion: the text's) instead of
      the fixed 11 + 2 tokens;
    - ``count_if``: a function of the request body; only answers to requests it accepts are counted
      in ``delivered`` and the token counters (e.g. to leave out a client's own probe requests).

    Counters: ``in_flight`` (requests received and not yet answered), ``max_in_flight``,
    ``in_flight_seconds`` (the integral of ``in_flight`` over time: divided by the elapsed time, the
    mean number in flight), ``served_at_once`` / ``max_served_at_once`` (inside the capacity), and
    ``delivered``, ``prompt_tokens``, ``completion_tokens``: answers written to the socket in full and the
    tokens their usage reported -- what a counting provider would bill.

    ``hold_after(n)``: after ``n`` answers in all, hold every further answer (the client waits);
    ``drop_held()`` then closes those connections without an answer (never counted).

    The client's identity probe (header ``X-Selfinstruct-Probe``, see ``LMClient.server_fingerprint``) is
    answered at once with ``probe_text`` (default: ``text`` when a string) and kept in ``probes``: never
    in ``requests``, the script or the counters.
    """

    def __init__(self, script=None, default="ok", text=" Yes", model_id="fake", *, latency=0.0, token_rate=None,
                 capacity=None, tokens="fixed", count_if=None, probe_text=None):
        self.script = list(script or [])
        self.model_id = model_id
        self.default = default
        self.text = text
        self.latency = latency
        self.token_rate = token_rate
        self.tokens = tokens
        self.count_if = count_if
        self.probes: list[dict] = []  # the client's identity probes (header X-Selfinstruct-Probe)
        self.probe_text = probe_text
        self.in_flight_at_arrival: list[int] = []
        self.answer_order: list[int] = []  # request numbers (positions in ``requests``) in the order answered
        self.requests: list[dict] = []
        self.auth: list[str] = []
        self.lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(capacity) if capacity else None
        self.in_flight = 0
        self.max_in_flight = 0
        self.served_at_once = 0
        self.max_served_at_once = 0
        self.in_flight_seconds = 0.0
        self._last_change = time.perf_counter()
        self.first_request_at: float | None = None
        self.last_answer_at: float | None = None
        self.delivered = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self._hold_after: int | None = None
        self._released = threading.Event()
        self._drop = False
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real servers

            def log_message(self, *args):
                pass

            def do_GET(self):
                self._send(200, {"data": [{"id": fake.model_id}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.headers.get("X-Selfinstruct-Probe"):  # the client's identity probe: not scripted
                    with fake.lock:
                        fake.probes.append(body)
                    text = fake.probe_text if fake.probe_text is not None else (
                        fake.text if isinstance(fake.text, str) else f" probe of {fake.model_id}")
                    return self._send(200, {"choices": [{"index": 0, "text": text, "finish_reason": "length",
                                                         "message": {"role": "assistant", "content": text}}]})
                with fake.lock:
                    fake.requests.append(body)
                    number = len(fake.requests) - 1
                    fake.auth.append(self.headers.get("Authorization", ""))
                    action = fake.script.pop(0) if fake.script else fake.default
                    fake._count(+1)
                    fake.in_flight_at_arrival.append(fake.in_flight)
                    if fake.first_request_at is None:
                        fake.first_request_at = time.perf_counter()
                self._done = False
                try:
                    self._answer(body, action, number)
                finally:
                    self._leave()

            def _leave(self):
                """No longer in flight: counted before the answer is written, so the client's next
                request never finds this one still counted."""
                if not self._done:
                    self._done = True
                    with fake.lock:
                        fake._count(-1)

            def _answer(self, body, action, number):
                if fake.slots is not None:
                    fake.slots.acquire()
                try:
                    with fake.lock:
                        fake.served_at_once += 1
                        fake.max_served_at_once = max(fake.max_served_at_once, fake.served_at_once)
                    payload = self._payload(body, action)
                finally:
                    with fake.lock:
                        fake.served_at_once -= 1
                    if fake.slots is not None:
                        fake.slots.release()
                if payload is None:
                    return
                code, data, headers, usage = payload
                if usage is not None and fake.count_if is not None and not fake.count_if(body):
                    usage = None
                with fake.lock:
                    hold = fake._hold_after is not None and fake.delivered >= fake._hold_after
                if hold:
                    fake._released.wait()
                    if fake._drop:
                        self.close_connection = True
                        return
                self._leave()
                self._raw(code, data, headers)
                if usage is not None:
                    with fake.lock:
                        fake.answer_order.append(number)
                        fake.delivered += 1
                        fake.prompt_tokens += usage[0]
                        fake.completion_tokens += usage[1]
                        fake.last_answer_at = time.perf_counter()

            def _payload(self, body, action):
                """(status, bytes, headers, (prompt, completion tokens) or None) after the simulated work."""
                if isinstance(action, tuple) and action[0] == "slow":
                    time.sleep(action[1])
                    action = "ok"
                if action in ("429", "500", "503"):
                    headers = {"Retry-After": "0"} if action == "429" else {}
                    return int(action), json.dumps({"error": {"message": f"scripted {action}"}}).encode(), headers, None
                if action == "bad_json":
                    return 200, b"this is not json", None, None
                if action == "truncated_json":
                    return 200, b'{"id": "x", "choices": [{"te', None, None
                chat = self.path.endswith("/chat/completions")
                text = fake.text(body) if callable(fake.text) else fake.text
                text = text.strip() if chat else text
                if fake.tokens == "words":
                    prompt = body.get("prompt") or " ".join(m.get("content", "") for m in body.get("messages", []))
                    usage = (len(str(prompt).split()), len(text.split()))
                else:
                    usage = (11, 2)
                delay = fake.latency(body) if callable(fake.latency) else fake.latency
                if fake.token_rate:
                    delay += usage[1] / fake.token_rate
                if delay:
                    time.sleep(delay)
                finish = "length" if action == "length" else "stop"
                choices = [] if action == "empty_choices" else [
                    {"index": 0, "finish_reason": finish, **({"message": {"role": "assistant", "content": text}} if chat else {"text": text, "logprobs": None})}
                ]
                data = json.dumps({
                    "id": "cmpl-1", "object": "chat.completion" if chat else "text_completion", "created": 0,
                    "model": body.get("model", "fake"), "choices": choices,
                    "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)},
                }).encode()
                return 200, data, None, usage

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
                self.wfile.flush()

        class QuietServer(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 1024  # hundreds of clients connect at once

            def handle_error(self, request, client_address):
                pass  # a client that timed out and hung up mid-answer is part of the script

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _count(self, delta: int) -> None:
        """Change ``in_flight`` (under the lock), integrating it over time."""
        now = time.perf_counter()
        self.in_flight_seconds += self.in_flight * (now - self._last_change)
        self._last_change = now
        self.in_flight += delta
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def hold_after(self, n: int) -> None:
        """Answer ``n`` requests in all, then hold every further answer until :meth:`drop_held`."""
        with self.lock:
            self._hold_after = n
            self._released.clear()
            self._drop = False

    def drop_held(self) -> None:
        """Close the held connections without an answer (they are never counted), and stop holding."""
        self._drop = True
        self._released.set()
        time.sleep(0.05)
        with self.lock:
            self._hold_after = None
        self._drop = False
        self._released.clear()

    def reset_counts(self) -> None:
        with self.lock:
            self.max_in_flight = self.in_flight
            self.max_served_at_once = self.served_at_once
            self.in_flight_seconds = 0.0
            self._last_change = time.perf_counter()
            self.first_request_at = self.last_answer_at = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._drop = True
        self._released.set()
        self.server.shutdown()
        self.server.server_close()


def shuffled_latency(low: float, high: float, seed: int = 0):
    """A latency function: for each request a seeded random delay in [low, high) seconds, drawn from
    its prompt, so answers come back in an order unrelated to the order sent."""

    def latency(body: dict) -> float:
        key = json.dumps([body.get("prompt"), body.get("messages"), body.get("seed")], sort_keys=True)
        return random.Random(f"{seed}:{key}").uniform(low, high)

    return latency


def main() -> None:
    """Run a latency-simulating server in its own process (for benchmarks): prints its base URL, then
    serves until stdin closes; at exit prints its counters as one JSON line."""
    import argparse
    import sys

    ap = argparse.ArgumentParser()
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--capacity", type=int, default=None)
    ap.add_argument("--token-rate", type=float, default=None)
    args = ap.parse_args()
    with FakeOpenAI(text=bench_text, latency=args.latency, capacity=args.capacity,
                    token_rate=args.token_rate) as fake:
        print(fake.base_url, flush=True)
        for line in sys.stdin:
            cmd = line.strip()
            if cmd == "stats":
                with fake.lock:
                    span = (fake.last_answer_at or 0) - (fake.first_request_at or 0)
                    print(json.dumps({"delivered": fake.delivered, "max_in_flight": fake.max_in_flight,
                                      "max_served_at_once": fake.max_served_at_once,
                                      "in_flight_seconds": fake.in_flight_seconds, "span": span}), flush=True)
            elif cmd == "reset":
                fake.reset_counts()
                print("ok", flush=True)


_BENCH_WORDS = [f"{a}{b}{c}" for a in ("bra", "cle", "dro", "fi", "glo", "ho", "ja", "ku", "lu", "mo")
                for b in "aeiou" for c in ("n", "s", "t", "x")]


def bench_text(body: dict) -> str:
    """Answers for the benchmark: step 1 gets three new instructions of words drawn from the request's
    seed (mostly novel), step 2 a label, step 3 two instances."""
    prompt = body.get("prompt", "")
    if prompt.endswith("Is it classification?"):
        return " No"
    if not prompt.startswith("Come up with a series of tasks"):
        return "Example 1\nInput: some input text\nOutput: some output text\nExample 2\nInput: other\nOutput: another"
    rng = random.Random(body.get("seed", 0))
    lines = ["Describe " + " ".join(rng.sample(_BENCH_WORDS, 8)) + "." for _ in range(3)]
    return " " + lines[0] + "\n10. " + lines[1] + "\n11. " + lines[2]


if __name__ == "__main__":
    main()
