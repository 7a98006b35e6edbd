"""A tiny OpenAI-compatible HTTP server over any LLM backend (the offline SmolLM2 one in practice).

``POST /v1/chat/completions`` takes ``model``, ``messages``, ``max_tokens`` (or
``max_completion_tokens``), ``temperature``, ``seed`` and ``response_format`` (``{"type": "text"}``
or ``{"type": "json_schema", "json_schema": {"schema": ...}}``, whose schema goes to the backend's
constrained decoding); ``GET /v1/models`` lists the one model. Requests are served one at a time (the
model is not thread-safe). Errors come back as OpenAI-style ``{"error": {"message", "type"}}`` with
HTTP 400 (bad request), 404 (unknown path) or 500 (backend failure).

    python -m agents.evolution.llm_server --port 8765
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
import uuid
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agents.evolution.llm import LLMBackend, LLMError, make_backend, read_json
from envs.validation import ConfigError

__all__ = ["LLMServer", "main", "serve"]

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20  # bytes of a request body


class _BadRequest(ValueError):
    pass


def _content_length(header: str | None) -> int:
    """The request body's size from its ``Content-Length`` header (a negative size would read until the client
    hangs up: refused, as is one over MAX_BODY)."""
    try:
        length = int(header or "0")
    except ValueError:
        raise _BadRequest(f"`Content-Length` must be an integer (got {header!r:.40})") from None
    if not 0 <= length <= MAX_BODY:
        raise _BadRequest(f"the request body must be 0 to {MAX_BODY} bytes (got Content-Length {length})")
    return length


def _request_body(data: bytes) -> Any:
    """A request body as JSON under the reply limits of :func:`~agents.evolution.llm.read_json` (an empty body is
    null); anything else is a bad request, never a server error."""
    try:
        return read_json(data.decode("utf-8")) if data.strip() else None
    except ValueError as e:  # not UTF-8, not JSON, too deep, a number out of range
        raise _BadRequest(f"the request body is not usable JSON: {e}") from e


def _completion_args(body: Any) -> dict[str, Any]:
    """The backend's arguments from a chat-completions request body."""
    if not isinstance(body, Mapping):
        raise _BadRequest("the request body must be a JSON object")
    if body.get("stream"):
        raise _BadRequest("`stream` is not supported (got true)")
    if body.get("n", 1) != 1:
        raise _BadRequest(f"`n` must be 1 (got {body.get('n')!r})")
    args: dict[str, Any] = {"messages": body.get("messages")}
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        args["max_tokens"] = max_tokens
    for key in ("temperature", "seed"):
        if body.get(key) is not None:
            args[key] = body[key]
    fmt = body.get("response_format") or {"type": "text"}
    if not isinstance(fmt, Mapping) or fmt.get("type") not in ("text", "json_schema"):
        raise _BadRequest(f"`response_format.type` must be one of ['text', 'json_schema'] (got {fmt!r:.200})")
    if fmt["type"] == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, Mapping) or not isinstance(spec.get("schema"), Mapping):
            raise _BadRequest("`response_format.json_schema.schema` must be a JSON Schema object")
        args["schema"] = spec["schema"]
    return args


class _Handler(BaseHTTPRequestHandler):
    server: LLMServer  # type: ignore[assignment]
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (the base class's name)
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, payload: Mapping[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, kind: str) -> None:
        self._send(status, {"error": {"message": message, "type": kind}})

    def do_GET(self) -> None:  # noqa: N802  (http.server's name)
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            self._send(200, {"object": "list", "data": [
                {"id": self.server.model_id, "object": "model", "created": 0, "owned_by": "agentic-rs"}]})
        else:
            self._error(404, f"unknown path {self.path!r} (try /v1/models or POST /v1/chat/completions)",
                        "invalid_request_error")

    def do_POST(self) -> None:  # noqa: N802
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._error(404, f"unknown path {self.path!r} (try POST /v1/chat/completions)", "invalid_request_error")
            return
        try:
            body = _request_body(self.rfile.read(_content_length(self.headers.get("Content-Length"))))
            args = _completion_args(body)
            with self.server.lock:
                reply = self.server.backend.complete(**args)
        except (_BadRequest, ConfigError, TypeError) as e:
            self._error(400, str(e), "invalid_request_error")
            return
        except LLMError as e:
            self._error(500, str(e), "server_error")
            return
        except Exception as e:  # noqa: BLE001  (a server answers every request; the traceback goes to the log)
            log.exception("backend failure")
            self._error(500, f"{type(e).__name__}: {e}", "server_error")
            return
        self._send(200, {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.server.model_id,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text},
                         "finish_reason": reply.finish_reason}],
            "usage": {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
                      "total_tokens": reply.prompt_tokens + reply.completion_tokens},
        })


class LLMServer(ThreadingHTTPServer):
    """The HTTP server; ``url`` is its ``.../v1`` base URL. Use :func:`serve` to run it in a thread."""

    daemon_threads = True

    def __init__(self, backend: LLMBackend, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__((host, port), _Handler)
        self.backend = backend
        self.model_id = str(getattr(backend, "model_name", backend.name))
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"

    def close(self) -> None:
        """Stop serving and release the port."""
        self.shutdown()
        self.server_close()
        if self.thread is not None:
            self.thread.join(timeout=10)

    def __enter__(self) -> LLMServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(backend: LLMBackend, host: str = "127.0.0.1", port: int = 0) -> LLMServer:
    """Start serving ``backend`` in a background thread (port 0: any free port; see ``server.url``)."""
    server = LLMServer(backend, host, port)
    server.thread = threading.Thread(target=server.serve_forever, name="llm-server", daemon=True)
    server.thread.start()
    log.info("serving %s at %s", server.model_id, server.url)
    return server


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--backend", default="smollm2", help="a backend of agents.evolution.llm.make_backend")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    backend = make_backend(a.backend)
    if hasattr(backend, "load"):
        backend.load()
    server = LLMServer(backend, a.host, a.port)
    log.info("serving %s at %s (Ctrl-C stops)", server.model_id, server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
