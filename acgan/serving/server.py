"""`acgan serve`: the ensemble behind kserve's ModelServer, speaking the Open Inference Protocol v2 over HTTP.

Besides kserve's own endpoints (/v2/health/live, /v2/models/NAME/ready, /v2/models/NAME/infer, /metrics), three are
ours, registered on kserve's FastAPI app before its own so that they take precedence:
  GET /                    the gallery: pick a class, see fresh samples and its evaluation figures
  GET /v2/health/ready     ready only once the ensemble is loaded (kserve's answers true as soon as the process
                           is up; the protocol's "server ready" means every model is ready)
  GET /v2/models/NAME      the protocol's metadata, with every class, split, step and figure in `parameters`
A bad request is a 400 with {"error": one line}; what cannot be served now (no ensemble yet, a damaged sub-model) a
503 naming it and the fix; either is logged as one line, never a traceback.
"""

from __future__ import annotations

import logging
import os
import socket
import warnings
from importlib import resources

import jinja2
from fastapi import FastAPI, Request
from fastapi.exceptions import FastAPIDeprecationWarning, RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from kserve import ModelServer
from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady
from kserve.model_server import app as kserve_app
from kserve.protocol.rest.server import RESTServer

from acgan.errors import UserError, one_line
from acgan.serving.batching import Unavailable
from acgan.serving.predictor import BadRequest, EnsembleModel
from acgan.settings import ServeSettings
from acgan.store import open_store

log = logging.getLogger(__name__)
_JSON = (b"application/json",)


class _ClientErrorsInOneLine(logging.Filter):
    """kserve's error handlers log every 4xx with its traceback; a client's mistake is one warning line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, (InvalidInput, ModelNotFound, ModelNotReady)):
            record.msg, record.args = f"{type(error).__name__}: {one_line(str(error))}", None
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class _JsonInferBodies:
    """ASGI middleware: a POST to .../infer is JSON, or the binary extension (which names its JSON part's length).
    Otherwise kserve would read the body as the binary extension and answer about a missing header, which is not
    what a client sending form data (curl -d without a Content-Type) needs to hear."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"].endswith("/infer"):
            headers = dict(scope["headers"])
            kind = headers.get(b"content-type", b"application/json").split(b";")[0].strip().lower()
            if not (kind in _JSON or kind.endswith(b"+json")) and b"inference-header-content-length" not in headers:
                log.warning("400 POST %s: a %s body", scope["path"], one_line(kind.decode(errors="replace")))
                response = JSONResponse({"error": f"the body is {kind.decode(errors='replace')!r}, not JSON: send the "
                                                  "inference request with Content-Type: application/json"}, 400)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _error(status: int):
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        message = one_line(str(exc))
        log.warning("%d %s %s: %s", status, request.method, request.url.path, message)
        return JSONResponse({"error": message}, status)
    return handler


async def _not_a_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 with a list of problems becomes the protocol's 400 with the first one."""
    problems = [e for e in exc.errors() if e.get("type") != "bytes_type"] or exc.errors()
    first = problems[0] if problems else {}
    if first.get("type") == "json_invalid":
        message = f"the body is not valid JSON ({first.get('ctx', {}).get('error', first.get('msg'))})"
    else:
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "InferenceRequest"))
        message = f"the body is not an inference request: {where or 'the body'}: {first.get('msg', 'invalid')}"
    message = one_line(f"{message}: send {{\"inputs\": [...]}} as the Open Inference Protocol v2 describes")
    log.warning("400 %s %s: %s", request.method, request.url.path, message)
    return JSONResponse({"error": message}, 400)


def gallery_page(model: EnsembleModel, problem: str | None) -> str:
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = env.from_string(resources.files("acgan.serving").joinpath("gallery.html").read_text())
    return template.render(model_name=model.name, store=model.store.uri, problem=problem)


def add_routes(app: FastAPI, model: EnsembleModel) -> None:
    """Our endpoints, handlers and middleware on kserve's app; called before kserve adds its own."""
    app.add_middleware(_JsonInferBodies)
    app.add_exception_handler(BadRequest, _error(400))
    app.add_exception_handler(Unavailable, _error(503))
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

    @app.get(f"/v2/models/{model.name}")
    async def metadata() -> dict:
        await model.healthy()
        return model.metadata()


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free one), or one line saying why not."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        return socket.create_server(address, family=family, backlog=2048)
    except OSError as e:
        reason = os.strerror(e.errno) if e.errno and not isinstance(e, socket.gaierror) else str(e.strerror or e)
        raise UserError(f"--host {host} --port {port}: cannot listen there ({reason}): choose a free --port "
                        "and an address of this machine for --host") from None


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
    rest = RESTServer(FASTAPI_APP_IMPORT_STRING, server.dataplane, server.model_repository_extension, settings.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    classes = f"{len(model.manifest.classes)} classes" if model.manifest else "no ensemble yet"
    log.info("serving %s (%s) on %s: gallery http://%s:%d/, inference POST http://%s:%d/v2/models/%s/infer",
             store.uri, classes, settings.device, shown, port, shown, port, settings.model_name)
    rest.run(sockets=[sock])
