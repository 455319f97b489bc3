"""The HTTP API and playground of `charrnn serve`, on Starlette.

Routes only parse and check the JSON, build the same `GenerationRequest` that `charrnn sample`
validates, and call the library. The model's work runs in a pool of worker threads (one per
core), off the event loop: requests are served concurrently, their steps interleaved, and each
request's samples are one batch. More threads than cores would only fight over the interpreter
lock. Streaming wraps the
`Generation` iterator as Server-Sent Events, one step at a time: when the client goes away, the
stream is cancelled and no further step is taken.

    POST /v1/generate   {prime, length, temperature, top_k, top_p, seed, num_samples, stop, beam,
                         best_of, stream}
    POST /v1/score      {text, per_token}
    GET  /v1/model      the model, its vocabulary and training summary
    GET  /healthz       liveness, and the generations in progress
    GET  /              the playground page (package data, no external assets)

A malformed request gets a 4xx JSON answer `{"error": ..., "field": ...}` naming the field; the
API never reads or writes a file named in a request.
"""

from __future__ import annotations

import asyncio
import json
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from importlib import resources

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from charrnn import signals
from charrnn.errors import UserError
from charrnn.generate.generation import Generation, GenerationRequest, Limits, settings_record
from charrnn.generate.sample import SettingError
from charrnn.score.evaluate import TextScorer
from charrnn.training.parallel import resolve_threads
from charrnn.user_text import invalid_at

LN2 = math.log(2)
FIELD_TYPES = {"prime": str, "length": int, "temperature": float, "top_k": int, "top_p": float, "seed": int,
               "num_samples": int, "stop": list, "beam": int, "best_of": int}
OPTIONAL = {"top_k", "top_p", "seed", "beam", "best_of"}


@dataclass(frozen=True)
class ServerLimits:
    """What one request may ask for; `generation` caps its settings."""

    generation: Limits = Limits()
    body_bytes: int = 64 * 1024
    score_chars: int = 100_000


class BadRequest(Exception):
    def __init__(self, message: str, field: str | None = None, status: int = 400):
        super().__init__(message)
        self.field, self.status = field, status


def bad_request(request, error: BadRequest) -> JSONResponse:
    return JSONResponse({"error": str(error), "field": error.field}, status_code=error.status)


def http_error(request, error: HTTPException) -> JSONResponse:
    return JSONResponse({"error": error.detail, "field": None}, status_code=error.status_code)


def internal_error(request, error: Exception) -> JSONResponse:
    """A bug: said as JSON too (the server logs the traceback)."""
    return JSONResponse({"error": f"internal error ({type(error).__name__}); this is a bug in charrnn", "field": None},
                        status_code=500)


async def json_object(request: Request, limit: int) -> dict:
    """The request's body: a JSON object of at most `limit` bytes."""
    if int(request.headers.get("content-length") or 0) > limit:
        raise BadRequest(f"the request body is larger than {limit:,} bytes", status=413)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BadRequest(f"the request body is larger than {limit:,} bytes", status=413)
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the request body is not valid JSON") from None
    except RecursionError:
        raise BadRequest("the request body nests arrays or objects too deeply") from None
    if not isinstance(value, dict):
        raise BadRequest("the request body must be a JSON object")
    check_strings(value)
    return value


def check_strings(body: dict):
    """Refuse a string anywhere in the body (a key or a value) that is not valid Unicode: JSON's
    `\\ud800` escapes decode to lone surrogates, which no reply could encode. Walked without recursion."""
    pending = [(name, name, value) for name, value in body.items()]
    while pending:
        field, key, value = pending.pop()
        for text, what in ((key, "name"), (value, "value")):
            if isinstance(text, str) and (where := invalid_at(text)) is not None:
                shown = field.encode("utf-8", "backslashreplace").decode("utf-8")
                raise BadRequest(f"the {what} of field {shown!r} is not valid UTF-8 text ({where})", shown)
        children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        pending.extend((field, str(k) if isinstance(k, str) else "", v) for k, v in children)


def typed(name: str, value, kind):
    """A JSON value checked against the type a field needs (booleans are not numbers)."""
    if value is None and name in OPTIONAL:
        return None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is list and isinstance(value, str):
        return (value,)
    if kind is list and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    if kind is not list and isinstance(value, kind) and not isinstance(value, bool):
        return value
    wanted = {str: "a string", int: "an integer", float: "a number", list: "a string or a list of strings"}[kind]
    raise BadRequest(f"{name} must be {wanted}{' or null' if name in OPTIONAL else ''}", name)


def generation_request(body: dict, limits: Limits) -> tuple[GenerationRequest, bool]:
    """(the validated request, whether to stream) from a /v1/generate body."""
    stream = body.pop("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("stream must be true or false", "stream")
    for name in body:
        if name not in FIELD_TYPES:
            known = ", ".join([*FIELD_TYPES, "stream"])
            raise BadRequest(f"unknown field {name!r}; the fields are {known}", name)
    settings = {name: typed(name, value, FIELD_TYPES[name]) for name, value in body.items()}
    request = GenerationRequest(**{"length": 200, **settings})
    try:
        request.validate(limits)
    except SettingError as error:
        raise BadRequest(f"{error.field} {error.rule}", error.field) from None
    return request.with_seed(), stream


class Server:
    """The loaded model and what the routes share: limits and the generations in progress."""

    def __init__(self, model, params, vocab, meta: dict, limits: ServerLimits, workers: int):
        self.model, self.params, self.vocab, self.meta, self.limits = model, params, vocab, meta, limits
        self.active = 0
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="charrnn",  # the model's work, off the event loop
                                       initializer=signals.block_in_this_thread)

    async def work(self, function, *args):
        """function(*args) in one of the model's worker threads."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, function, *args)

    def start(self, request: GenerationRequest) -> Generation:
        try:
            return Generation(self.model, self.params, self.vocab, request)
        except UserError as error:
            raise BadRequest(str(error), "prime") from None

    def answer(self, generation: Generation) -> dict:
        return {"settings": settings_record(generation.request, generation.shown_prime),
                "samples": [asdict(s) for s in generation.samples]}

    async def generate(self, request: Request):
        settings, stream = generation_request(await json_object(request, self.limits.body_bytes),
                                              self.limits.generation)
        generation = self.start(settings)
        if stream:
            return StreamingResponse(self.events(generation), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        self.active += 1
        try:
            await self.work(lambda: [None for _ in generation])
        finally:
            self.active -= 1
        return JSONResponse(self.answer(generation))

    async def events(self, generation: Generation):
        """Server-Sent Events: `text` events {"index", "text"} as samples grow, then `done` with the
        whole answer. Each step runs in a worker thread; a cancelled stream takes no further step."""
        self.active += 1
        steps = iter(generation)
        try:
            yield event("prime", {"text": generation.shown_prime})
            while (pieces := await self.work(next, steps, None)) is not None:
                for index, text in pieces:
                    yield event("text", {"index": int(index), "text": text})
            yield event("done", self.answer(generation))
        finally:
            self.active -= 1

    async def score(self, request: Request):
        body = await json_object(request, self.limits.body_bytes)
        for name in body:
            if name not in ("text", "per_token"):
                raise BadRequest(f"unknown field {name!r}; the fields are text, per_token", name)
        text = body.get("text")
        if not isinstance(text, str):
            raise BadRequest("text must be a string", "text")
        if len(text) > self.limits.score_chars:
            raise BadRequest(f"text must be at most {self.limits.score_chars:,} characters, not {len(text):,}", "text")
        per_token = body.get("per_token", False)
        if not isinstance(per_token, bool):
            raise BadRequest("per_token must be true or false", "per_token")
        scorer = TextScorer(self.model, self.params, self.vocab, keep=per_token)
        await self.work(scorer.feed, text)
        result = scorer.result()
        if result.score.tokens == 0:
            raise BadRequest("nothing to score: the text needs at least two tokens the model knows", "text")
        answer = {"nats_per_token": result.score.nats_per_token, "bits_per_token": result.score.bits_per_token,
                  "perplexity": result.score.perplexity, "tokens": result.score.tokens, "unknown": result.unknown,
                  "unknown_handling": result.unknown_handling}
        if per_token:
            answer["per_token"] = [{"token": token, "bits": None if math.isnan(nats) else nats / LN2,
                                    "unknown": bool(unknown)}
                                   for token, nats, unknown in zip(result.shown, result.nll, result.unknown_mask)]
        return JSONResponse(answer)

    async def model_info(self, request: Request):
        config, progress = self.meta["config"], self.meta.get("progress", {})
        return JSONResponse({
            "model": config["model"], "vocab_size": self.vocab.size, "level": self.vocab.level,
            "vocabulary": list(self.vocab.tokens),
            "parameters": sum(int(a.size) for a in self.params.values()),
            "training": {key: progress.get(key) for key in ("step", "epoch", "tokens", "best_val", "best_step",
                                                            "last_val")},
            "limits": {f.name: getattr(self.limits.generation, f.name) for f in fields(Limits)}})

    async def health(self, request: Request):
        return JSONResponse({"status": "ok", "active_generations": self.active})

    async def page(self, request: Request):
        body = resources.files("charrnn.serve").joinpath("playground.html").read_bytes()
        return Response(body, media_type="text/html; charset=utf-8")


def event(kind: str, data: dict) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def create_app(model, params, vocab, meta: dict, limits: ServerLimits = ServerLimits(), workers: int = 0) -> Starlette:
    """The ASGI application serving one loaded model, its work in `workers` threads (0: one per core)."""
    server = Server(model, params, vocab, meta, limits, resolve_threads(workers))
    routes = [Route("/v1/generate", server.generate, methods=["POST"]),
              Route("/v1/score", server.score, methods=["POST"]),
              Route("/v1/model", server.model_info, methods=["GET"]),
              Route("/healthz", server.health, methods=["GET"]),
              Route("/", server.page, methods=["GET"])]
    return Starlette(routes=routes, exception_handlers={BadRequest: bad_request, HTTPException: http_error,
                                                        Exception: internal_error})
