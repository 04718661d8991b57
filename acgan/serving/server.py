"""`acgan serve`: the ensemble behind kserve's ModelServer, speaking the Open Inference Protocol v2 over HTTP.

Besides kserve's own endpoints (/v2/health/live, /v2/models/NAME/ready, /metrics), these are ours, registered on
kserve's FastAPI app before its own so that they take precedence:
  GET /                    the gallery: a few classes' samples at once, pick any class for fresh ones and its figures
  GET /v2/health/ready     ready only once the ensemble is loaded (kserve's answers true as soon as the process
                           is up; the protocol's "server ready" means every model is ready)
  GET /v2/models/NAME      the protocol's metadata, with every class, split, step and figure in `parameters`
  POST /v2/models/NAME/infer   JSON or the binary extension, read by acgan/serving/protocol.py (why: `infer`)
  .../versions/V/...       404: the model has no versions
A bad request is a 400 with {"error": one line}; what cannot be served now (no ensemble yet, a damaged sub-model, a
full queue) a 503 naming it and the fix; either is logged as one line, never a traceback. Connections: uvicorn's
h11 protocol (its 16 KiB bound on a request's headers), its keep-alive timeout as the idle timeout, and a deadline
for a request's headers (uvicorn has none: `_deadline_protocol`) and body.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import warnings
from importlib import resources

import jinja2
from fastapi import FastAPI, Request
from fastapi.exceptions import FastAPIDeprecationWarning, RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from kserve import ModelServer
from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady
from kserve.model_server import app as kserve_app
from kserve.protocol.infer_type import InferResponse
from kserve.protocol.rest.server import RESTServer
from starlette.exceptions import HTTPException as StarletteHTTPException
from uvicorn.protocols.http.h11_impl import H11Protocol

from acgan.errors import UserError
from acgan.serving.batching import Unavailable
from acgan.serving.predictor import EnsembleModel
from acgan.serving.protocol import (HEADER_LENGTH, MESSAGE_CHARS, QUOTED_CHARS, BadRequest, bounded,
                                    describe_problems, encode_response, parse_request, quoted, wants_binary)
from acgan.settings import ServeSettings
from acgan.store import open_store

log = logging.getLogger(__name__)
FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")


class _ClientErrorsInOneLine(logging.Filter):
    """kserve's error handlers log every 4xx with its traceback; a client's mistake is one warning line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, (InvalidInput, ModelNotFound, ModelNotReady)):
            record.msg, record.args = f"{type(error).__name__}: {bounded(str(error))}", None
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class RequestTimeout(Exception):
    """The client did not send its request in time: HTTP 408."""


class NoVersions(Exception):
    """A path names a model version; this model has none: HTTP 404."""


def _refuse(request: Request, status: int, message: str, headers: dict | None = None) -> JSONResponse:
    """The protocol's error object ({"error": one line}), and the same line in the log."""
    message = bounded(message)
    log.warning("%d %s %s: %s", status, request.method, bounded(request.url.path)[:MESSAGE_CHARS // 4], message)
    return JSONResponse({"error": message}, status, headers=headers)


def _error(status: int):
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        retry = getattr(exc, "retry_after", None)
        return _refuse(request, status, str(exc), {"Retry-After": str(retry)} if retry else None)
    return handler


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Starlette's own 404, 405 and body errors as the protocol's error object (they say {"detail": ...})."""
    return _refuse(request, exc.status_code, str(exc.detail), exc.headers)


async def _not_a_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 with a list of problems (kserve's other endpoints) becomes the protocol's 400 with the first."""
    return _refuse(request, 400, describe_problems(exc.errors()))


async def _unless_gone(request: Request, work) -> InferResponse | None:
    """`work`'s result, or None once the client has hung up: the work is cancelled, so that a request still waiting
    for its batch leaves the queue undrawn (uvicorn answers `receive()` with http.disconnect when the connection is
    lost, once the body is read)."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    gone = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
    if not task.done() or task.cancelled():
        await asyncio.wait({task})
        log.info("%s %s: the client went away; its request was dropped", request.method, request.url.path)
        return None
    return task.result()


def gallery_page(model: EnsembleModel, problem: str | None) -> str:
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = env.from_string(resources.files("acgan.serving").joinpath("gallery.html").read_text())
    return template.render(model_name=model.name, store=model.store.uri, problem=problem)


def add_routes(app: FastAPI, model: EnsembleModel) -> None:
    """Our endpoints and handlers on kserve's app; called before kserve adds its own, so that ours take precedence."""
    app.add_exception_handler(BadRequest, _error(400))
    app.add_exception_handler(NoVersions, _error(404))
    app.add_exception_handler(RequestTimeout, _error(408))
    app.add_exception_handler(Unavailable, _error(503))
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _not_a_request)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def gallery() -> HTMLResponse:
        try:
            await model.healthy()
        except Unavailable as e:
            return HTMLResponse(gallery_page(model, str(e)), 503)
        return HTMLResponse(gallery_page(model, None))

    @app.get("/v2/health/ready")
    async def ready() -> dict:
        return {"ready": await model.healthy()}

    @app.get("/v2/models/{model_name}")
    async def metadata(model_name: str) -> dict:
        if model_name != model.name:
            raise ModelNotFound(model_name[:QUOTED_CHARS])
        await model.healthy()
        return model.metadata()

    @app.api_route("/v2/models/{model_name}/versions/{version}/{rest:path}", methods=["GET", "POST"],
                   include_in_schema=False)
    @app.api_route("/v2/models/{model_name}/versions/{version}", methods=["GET"], include_in_schema=False)
    async def versions(model_name: str, version: str, rest: str = "") -> None:
        raise NoVersions(f"model {quoted(model_name)} has no versions to choose from (asked for {quoted(version)}): "
                         f"use /v2/models/{model.name}{'/' + rest if rest else ''}")

    @app.post("/v2/models/{model_name}/infer")
    async def infer(model_name: str, request: Request) -> Response:
        """kserve's own handler (V2Endpoints.infer, kserve 0.21.0) reads a body without the binary header as
        bytes unless its Content-Type is JSON, answers malformed binary bodies with a 500, draws for clients that
        have gone, encodes on the event loop and sends `model_version: null`; this one does none of that."""
        if model_name != model.name:
            raise ModelNotFound(model_name[:QUOTED_CHARS])
        await model.healthy()
        try:
            body = await asyncio.wait_for(request.body(), model.settings.request_timeout_s)
        except TimeoutError:
            raise RequestTimeout(f"the body did not arrive within {model.settings.request_timeout_s:g} s "
                                 "(--request-timeout-s)") from None
        header = request.headers.get(HEADER_LENGTH)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if header is None and kind in FORMS:
            raise BadRequest(f"the body is {kind!r}, not JSON: send the inference request with Content-Type: "
                             "application/json")
        payload = parse_request(body, header, model.name)
        answer = await _unless_gone(request, model.predict(payload, dict(request.headers)))
        if answer is None:
            return Response(status_code=499)  # nobody reads it
        content, headers = await asyncio.get_running_loop().run_in_executor(None, encode_response, answer,
                                                                            wants_binary(payload))
        return Response(content, headers=headers)


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free one), or one line saying why not."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        return socket.create_server(address, family=family, backlog=2048)
    except OSError as e:
        reason = os.strerror(e.errno) if e.errno and not isinstance(e, socket.gaierror) else str(e.strerror or e)
        raise UserError(f"--host {host} --port {port}: cannot listen there ({reason}): choose a free --port "
                        "and an address of this machine for --host") from None


def _deadline_protocol(seconds: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a deadline for each request's headers: from the connection, or from the first
    byte after an answer (until then uvicorn's keep-alive timeout holds). uvicorn 0.55 times only idle keep-alive
    connections (`timeout_keep_alive`, armed in `on_response_complete`): a client that connects and sends nothing,
    or half its headers, is held for ever."""

    class DeadlineH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def _reading_headers(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _arm(self) -> None:
            if self._deadline is None and self._reading_headers():
                self._deadline = self.loop.call_later(seconds, self._too_late)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_late(self) -> None:
            self._deadline = None
            if self._reading_headers() and not self.transport.is_closing():
                log.warning("closed a connection from %s: no complete request headers within %g s "
                            "(--request-timeout-s)", self.client and self.client[0], seconds)
                self.transport.close()

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            self._arm()
            super().data_received(data)
            if not self._reading_headers():
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return DeadlineH11Protocol


def serve(settings: ServeSettings) -> None:
    """Serve the ensemble until interrupted (SIGINT or SIGTERM: uvicorn finishes the requests in flight)."""
    import torch

    if settings.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is visible; run on a GPU machine or use --device cpu")
    store = open_store(settings.store)
    store.ensure_ready()
    model = EnsembleModel(settings, store)
    if not model.load():
        log.warning("not ready: %s", model.problem)
    sock = listen(settings.host, settings.port)
    warnings.filterwarnings("ignore", category=FastAPIDeprecationWarning)  # kserve 0.21's ORJSONResponse, per request
    logging.getLogger("kserve").addFilter(_ClientErrorsInOneLine())
    logging.getLogger("kserve.trace").setLevel(logging.WARNING)  # a timing line per request
    server = ModelServer(http_port=settings.port, enable_grpc=False, enable_latency_logging=False)
    server.register_model(model)
    add_routes(kserve_app, model)
    # kserve's RESTServer binds every interface (host "0.0.0.0" in RESTServer.__init__, kserve 0.21.0): it is given
    # the socket bound to --host instead, through its own `run(sockets=...)`.
    rest = RESTServer(FASTAPI_APP_IMPORT_STRING, server.dataplane, server.model_repository_extension, settings.port,
                      timeout_keep_alive=settings.idle_timeout_s)
    rest.config.http = _deadline_protocol(settings.request_timeout_s)  # uvicorn.Config's `http` takes a class
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    classes = f"{len(model.manifest.classes)} classes" if model.manifest else "no ensemble yet"
    log.info("serving %s (%s) on %s: gallery http://%s:%d/, inference POST http://%s:%d/v2/models/%s/infer",
             store.uri, classes, settings.device, shown, port, shown, port, settings.model_name)
    rest.run(sockets=[sock])
