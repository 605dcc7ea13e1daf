"""A file server on 127.0.0.1 for download tests: serves given bytes under raw-file paths
(``/<owner>/<repo>/<branch>/<path>``), honours ``Range: bytes=N-`` (or not), can cut a body short once,
can leave out Content-Length, and logs every request's path and Range header."""

from __future__ import annotations

import dataclasses
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from selfinstruct_utils import data as data_mod
from selfinstruct_utils.data import DATASETS, RAW
from selfinstruct_utils.download import count_records, files_of


class Mirror:
    def __init__(self, files: dict[str, bytes], *, ranges: bool = True, lengths: bool = True):
        self.files = dict(files)
        self.ranges = ranges
        self.lengths = lengths  # False: no Content-Length (the body ends when the connection closes)
        self.cut_once: dict[str, int] = {}  # path -> bytes sent before the connection drops (first request only)
        self.log: list[tuple[str, str | None]] = []
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                mirror.log.append((self.path, rng))
                body = mirror.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                start = 0
                if rng and mirror.ranges:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                if mirror.lengths:
                    self.send_header("Content-Length", str(len(body) - start))
                else:
                    self.close_connection = True
                self.end_headers()
                cut = mirror.cut_once.pop(self.path, None)
                self.wfile.write(body[start:cut] if cut is not None else body[start:])
                if cut is not None:
                    self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Mirror:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


SUPERNI_DEFINITIONS = [  # written for the tests, in the SuperNI test set's prompt/completion encoding
    ("In this task, you are given a sentence. Decide whether it is grammatical. Answer yes or no.",
     [("The cat sat on the mat.", "yes"), ("Mat the on sat cat.", "no")]),
    ("Given a short story, write a title for it in at most five words.",
     [("Ann lost her key and found it in the fridge.", "The Cold Key"), ("A dog learned to swim.", "Brave Paws"),
      ("Rain fell for a week.", "Seven Wet Days")]),
    ("Translate the given number word into digits.", [("twelve", "12")]),
]


def superni_file() -> bytes:
    lines = []
    for definition, instances in SUPERNI_DEFINITIONS:
        for inp, out in instances:
            prompt = f"Definition: {definition}\n\nNow complete the following example -\nInput: {inp}\nOutput: "
            lines.append(json.dumps({"prompt": prompt, "completion": out + "<|endoftext|>"}))
    return ("\n".join(lines) + "\n").encode()


def published_files(data) -> dict[str, bytes]:
    """Registry path -> bytes: the real seed-group files; for the big artifacts, real files of the same
    formats from the shared data (a GPT-3 run's instances and finetuning data, Code Alpaca) and the
    SuperNI lines above."""
    gen2 = data / "generated/maulikmadhavi__self-instruct/gpt3_generations2/finetuning_data"
    out = {d.path: (data / d.path).read_bytes() for d in files_of("seeds")}
    out[DATASETS["Self-Instruct 82K (paper)"].path] = (gen2 / "all_generated_instances.jsonl").read_bytes()
    out[DATASETS["Self-Instruct finetuning data (paper)"].path] = (gen2 / "gpt3_finetuning_data_253.jsonl").read_bytes()
    out[DATASETS["SuperNI test set"].path] = superni_file()
    out[DATASETS["Alpaca 52K"].path] = (data / "generated/sahil280114__codealpaca/code_alpaca_2k.json").read_bytes()
    return out


def served(files: dict[str, bytes]) -> dict[str, bytes]:
    """Registry path -> bytes, as URL paths of the mirror."""
    by_path = {d.path: d for d in DATASETS.values()}
    return {by_path[p].url[len(RAW):]: body for p, body in files.items()}


def set_small_registry(monkeypatch, tmp_path, data) -> dict[str, bytes]:
    """The published files' stand-ins (:func:`published_files`), with the registry's expected counts set to the small files' own counts (the real ones stay untested here)."""
    files = published_files(data)
    for name, d in list(DATASETS.items()):
        if d.path in files and d.expected is not None:
            tmp = tmp_path / ("count" + d.path.replace("/", "_"))
            tmp.write_bytes(files[d.path])
            monkeypatch.setitem(data_mod.DATASETS, name, dataclasses.replace(d, expected=count_records(tmp)))
    return files
