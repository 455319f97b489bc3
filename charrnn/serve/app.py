"""The HTTP API and playground of `charrnn serve`, on Starlette.

Routes only parse and check the JSON, build the same `GenerationRequest` that `charrnn sample`
validates, and hand it to the library. Sampling requests join one continuous batch
(`charrnn.serve.batching`): every request in flight advances one token per batched step of the
model. Beam search and scoring, which do not step with others, run in a pool of worker threads
(one per core), as every request does when batching is off (`batch_streams` 0). Streaming
wraps a request's text as Server-Sent Events as the batch makes it; when the client goes away,
its request leaves the batch at the next step.

    POST /v1/generate      {prime, length, temperature, top_k, top_p, seed, num_samples, stop, beam,
                            best_of, stream}
    POST /v1/score         {text, per_token}
    GET  /v1/model         the model, its vocabulary and training summary
    POST /v1/completions   OpenAI's legacy completions (`charrnn.serve.openai`)
    GET  /v1/models, GET /v1/models/{id}
    GET  /healthz          liveness, the requests in flight (no key needed)
    GET  /                 the playground page (package data, no external assets; no key needed)

A malformed request gets a 4xx JSON answer: `{"error": ..., "field": ...}` on charrnn's own
routes, OpenAI's `{"error": {"message", "type", "param", "code"}}` on the OpenAI ones. With an API
key, every other route needs `Authorization: Bearer KEY` (compared in constant time). Requests in
flight are capped (`max_concurrent`, 429 beyond). The API never reads or writes a file named in a
request.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, fields, replace
from importlib import resources

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from charrnn import signals
from charrnn.errors import UserError
from charrnn.generate.generation import Generation, GenerationRequest, Limits, settings_record
from charrnn.generate.jobs import SamplingJob
from charrnn.generate.sample import SettingError, encode_prime
from charrnn.score.evaluate import TextScorer
from charrnn.serve import openai
from charrnn.serve.batching import ContinuousBatcher, Ticket
from charrnn.serve.guard import loop_exception_handler
from charrnn.training.parallel import resolve_threads
from charrnn.user_text import invalid_at

LN2 = math.log(2)
FIELD_TYPES = {"prime": str, "length": int, "temperature": float, "top_k": int, "top_p": float, "seed": int,
               "num_samples": int, "stop": list, "beam": int, "best_of": int}
OPTIONAL = {"top_k", "top_p", "seed", "beam", "best_of"}
COMPLETION_FIELDS = {"model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "n", "stop", "seed", "stream",
                     "stream_options", "logprobs", "echo", "best_of", "suffix", "logit_bias", "presence_penalty",
                     "frequency_penalty", *openai.IGNORED}
OPEN = {"/healthz", "/"}  # what needs no API key: liveness, and the playground's static page


@dataclass(frozen=True)
class ServerLimits:
    """What one request may ask for; `generation` caps its settings. `max_concurrent` requests
    may be in flight at once; `body_seconds` is the time a client has to send its body."""

    generation: Limits = Limits()
    body_bytes: int = 64 * 1024
    score_chars: int = 100_000
    max_concurrent: int = 256
    batch_streams: int = 256  # 0: no batching, each request a batch of its own in the pool (as before it)
    body_seconds: float = 10.0


class BadRequest(Exception):
    def __init__(self, message: str, field: str | None = None, status: int = 400):
        super().__init__(message)
        self.field, self.status = field, status


def bad_request(request, error: BadRequest) -> JSONResponse:
    if request.url.path.startswith(("/v1/completions", "/v1/models")):
        return api_error(request, openai.APIError(str(error), error.field, error.status))
    return JSONResponse({"error": str(error), "field": error.field}, status_code=error.status)


def api_error(request, error: openai.APIError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status)


def http_error(request, error: HTTPException) -> JSONResponse:
    if request.url.path.startswith(("/v1/completions", "/v1/models")):
        return api_error(request, openai.APIError(str(error.detail), status=error.status_code))
    return JSONResponse({"error": error.detail, "field": None}, status_code=error.status_code)


def internal_error(request, error: Exception) -> JSONResponse:
    """A bug: said as JSON too (the server logs the traceback)."""
    return JSONResponse({"error": f"internal error ({type(error).__name__}); this is a bug in charrnn", "field": None},
                        status_code=500)


async def json_object(request: Request, limit: int, seconds: float) -> dict:
    """The request's body: a JSON object of at most `limit` bytes, sent within `seconds`."""
    if int(request.headers.get("content-length") or 0) > limit:
        raise BadRequest(f"the request body is larger than {limit:,} bytes", status=413)

    async def read() -> bytes:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise BadRequest(f"the request body is larger than {limit:,} bytes", status=413)
        return body

    try:
        body = await asyncio.wait_for(read(), seconds)
    except asyncio.TimeoutError:
        raise BadRequest(f"the request body did not arrive within {seconds:g} s", status=408) from None
    except ClientDisconnect:
        raise BadRequest("the client went away while sending its body", status=400) from None
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
    `\\\\ud800` escapes decode to lone surrogates, which no reply could encode. Walked without recursion."""
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


def network_summary(meta: dict) -> dict:
    """One network's settings and training summary, as `GET /v1/model` describes it, from its checkpoint's meta."""
    progress = meta.get("progress", {})
    return {"model": meta["config"]["model"],
            "training": {key: progress.get(key) for key in ("step", "epoch", "tokens", "best_val", "best_step",
                                                            "last_val", "averaged")}}


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


class Outbox:
    """What the batch's thread delivers, handed to the event loop once per step (one wake-up of
    the loop, however many requests got text): each ticket's `inbox` queue receives it."""

    def __init__(self):
        self.loop: asyncio.AbstractEventLoop | None = None
        self.items, self.lock = [], threading.Lock()

    def deliver(self, ticket: Ticket, item):
        with self.lock:
            self.items.append((ticket, item))

    def flush(self):
        with self.lock:
            items, self.items = self.items, []
        if items and self.loop is not None:
            self.loop.call_soon_threadsafe(self.dispatch, items)

    @staticmethod
    def dispatch(items):
        for ticket, item in items:
            ticket.inbox.put_nowait(item)


class Server:
    """The loaded model and what the routes share: limits, the batch, the pool, the requests in flight."""

    def __init__(self, model, params, vocab, meta: dict, limits: ServerLimits, workers: int, model_id: str,
                 api_key: str | None, created: int):
        self.model, self.params, self.vocab, self.meta, self.limits = model, params, vocab, meta, limits
        self.model_id, self.api_key, self.created = model_id, api_key, created
        self.active = 0
        self.tokens = np.array(vocab.tokens, dtype=object)
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="charrnn",  # beam search and scoring
                                       initializer=signals.block_in_this_thread)
        self.outbox = Outbox()
        self.batch = ContinuousBatcher(model, params, limits.batch_streams, self.outbox.flush)

    async def work(self, function, *args):
        """function(*args) in one of the pool's threads."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, function, *args)

    # --- the batch ---

    def ticket(self, request: GenerationRequest, streaming: bool, logprobs: int | None = None, keep_prime: bool = False,
               field: str = "prime"):
        """A request for the batch -> (its ticket, its prime as shown)."""
        try:
            ids, shown, _ = encode_prime(request.prime, self.vocab)
        except UserError as error:
            raise BadRequest(str(error), field) from None
        job = SamplingJob(request, self.tokens, logprobs)
        job.quiet = not streaming
        ticket = Ticket(job, np.asarray(ids, dtype=np.int64), self.outbox.deliver, keep_prime_logprobs=keep_prime,
                        streaming=streaming)
        ticket.inbox = asyncio.Queue()
        self.batch.submit(ticket)
        return ticket, shown

    async def pieces(self, ticket: Ticket):
        """Each step's new text of a ticket, until it ends (then its samples are set)."""
        try:
            while (item := await ticket.inbox.get()) is not None:
                yield item
        finally:
            ticket.cancelled = True  # a client gone (or a request finished): it leaves the batch
        if ticket.error is not None:
            raise ticket.error

    async def finished(self, ticket: Ticket):
        async for _ in self.pieces(ticket):
            pass

    # --- charrnn's own routes ---

    def answer(self, request: GenerationRequest, shown: str, samples) -> dict:
        return {"settings": settings_record(request, shown), "samples": [asdict(s) for s in samples]}

    def kept_samples(self, request: GenerationRequest, shown: str, ticket: Ticket) -> list:
        results = [replace(r, text=shown + r.text) for r in ticket.samples]
        return [results[i] for i in ticket.job.best_of(results)] if request.best_of is not None else results

    async def generate(self, request: Request):
        settings, stream = generation_request(await self.body(request), self.limits.generation)
        if settings.beam is not None or not self.limits.batch_streams:
            return await self.alone(settings, stream)
        ticket, shown = self.ticket(settings, streaming=stream and settings.best_of is None)
        if stream:
            return StreamingResponse(self.events(settings, ticket, shown), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        with self.in_flight():
            await self.finished(ticket)
        return JSONResponse(self.answer(settings, shown, self.kept_samples(settings, shown, ticket)))

    async def events(self, settings: GenerationRequest, ticket: Ticket, shown: str):
        """Server-Sent Events: `text` events {"index", "text"} as samples grow, then `done` with the
        whole answer. A client that goes away takes its request out of the batch."""
        with self.in_flight():
            yield event("prime", {"text": shown})
            async for pieces in self.pieces(ticket):
                for index, text in pieces:
                    yield event("text", {"index": int(index), "text": text})
            samples = self.kept_samples(settings, shown, ticket)
            if settings.best_of is not None:  # known only at the end
                for index, sample in enumerate(samples):
                    if sample.completion:
                        yield event("text", {"index": index, "text": sample.completion})
            yield event("done", self.answer(settings, shown, samples))

    async def alone(self, settings: GenerationRequest, stream: bool):
        """A request as a batch of its own, in the pool: beam search, which does not step with
        others, and every request when batching is off. A stream takes one step per event; when
        its client goes away, no further step is taken."""
        try:
            generation = Generation(self.model, self.params, self.vocab, settings)
        except UserError as error:
            raise BadRequest(str(error), "prime") from None
        if not stream:
            with self.in_flight():
                await self.work(lambda: [None for _ in generation])
            return JSONResponse(self.answer(settings, generation.shown_prime, generation.samples))

        async def events():
            with self.in_flight():
                steps = iter(generation)
                yield event("prime", {"text": generation.shown_prime})
                while (pieces := await self.work(next, steps, None)) is not None:
                    for index, text in pieces:
                        yield event("text", {"index": int(index), "text": text})
                yield event("done", self.answer(settings, generation.shown_prime, generation.samples))
        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    async def score(self, request: Request):
        body = await self.body(request)
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
        with self.in_flight():
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
        networks = self.params if isinstance(self.params, list) else [self.params]
        info = {**network_summary(self.meta), "vocab_size": self.vocab.size, "level": self.vocab.level,
                "vocabulary": list(self.vocab.tokens),
                "parameters": sum(int(a.size) for p in networks for a in p.values()), "networks": len(networks),
                "limits": {f.name: getattr(self.limits.generation, f.name) for f in fields(Limits)}}
        if "members" in self.meta:  # an ensemble: "model" and "training" above are its first member's
            info["members"] = [network_summary(member) for member in self.meta["members"]]
        return JSONResponse(info)

    async def health(self, request: Request):
        return JSONResponse({"status": "ok", "active_generations": self.active, "auth": self.api_key is not None,
                             "batch": {"running": len(self.batch.running), "waiting": len(self.batch.waiting),
                                       "steps": self.batch.steps}})

    async def page(self, request: Request):
        body = resources.files("charrnn.serve").joinpath("playground.html").read_bytes()
        return Response(body, media_type="text/html; charset=utf-8")

    # --- OpenAI's routes ---

    def model_card(self) -> dict:
        return {"id": self.model_id, "object": "model", "created": self.created, "owned_by": "charrnn"}

    async def models(self, request: Request):
        return JSONResponse({"object": "list", "data": [self.model_card()]})

    async def model_by_id(self, request: Request):
        if request.path_params["id"] != self.model_id:
            raise openai.APIError(f"the model {request.path_params['id']!r} does not exist; this server has "
                                  f"{self.model_id!r}", "model", 404, code="model_not_found")
        return JSONResponse(self.model_card())

    async def completions(self, request: Request):
        body = await self.body(request)
        asked = openai.completion_request(body, self.model_id, self.limits.generation, COMPLETION_FIELDS)
        tickets = [self.ticket(r, streaming=asked.stream, logprobs=asked.logprobs,
                               keep_prime=asked.echo and asked.logprobs is not None, field="prompt")
                   for r in asked.requests]
        identity = {"id": openai.completion_id(), "object": "text_completion", "created": int(time.time()),
                    "model": self.model_id}
        if asked.stream:
            return StreamingResponse(self.completion_events(asked, tickets, identity), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        with self.in_flight():
            try:
                for ticket, _ in tickets:
                    await self.finished(ticket)
            finally:
                for ticket, _ in tickets:
                    ticket.cancelled = True
        choices, completion_tokens = [], 0
        for prompt_index, ((ticket, shown), request) in enumerate(zip(tickets, asked.requests)):
            for j, i in enumerate(openai.kept(ticket.samples, asked.n)):
                sample = ticket.samples[i]
                completion_tokens += sample.tokens
                choices.append(self.choice(asked, ticket, shown, request, sample, i, prompt_index * asked.n + j))
        return JSONResponse({**identity, "choices": choices, "usage": self.usage(tickets, completion_tokens)})

    def choice(self, asked, ticket: Ticket, shown: str, request, sample, stream: int, index: int) -> dict:
        logprobs = None
        if asked.logprobs is not None:
            prompt_ids = ticket.prime_ids if request.prime else ticket.prime_ids[:1] if shown else ticket.prime_ids[:0]
            logprobs = openai.logprobs_of(self.vocab, prompt_ids, ticket.prime_logprobs,
                                          ticket.job.token_logprobs[stream], asked.logprobs, asked.echo, len(shown),
                                          sample.completion)
        text = (shown if asked.echo else "") + sample.completion
        return {"text": text, "index": index, "logprobs": logprobs, "finish_reason": sample.finish_reason}

    def usage(self, tickets, completion_tokens: int) -> dict:
        prompt_tokens = sum(len(ticket.prime_ids) for ticket, _ in tickets if ticket.job.request.prime)
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens}

    async def completion_events(self, asked, tickets, identity: dict):
        """OpenAI's stream: a `data: {chunk}` per piece of text, a last chunk per choice with its
        finish_reason, the usage if asked, then `data: [DONE]`."""
        def chunk(index: int, text: str, finish=None) -> str:
            return data({**identity, "choices": [{"text": text, "index": index, "logprobs": None,
                                                  "finish_reason": finish}]})
        with self.in_flight():
            completion_tokens = 0
            try:
                for prompt_index, (ticket, shown) in enumerate(tickets):
                    base = prompt_index * asked.n
                    if asked.echo and shown:
                        for j in range(asked.n):
                            yield chunk(base + j, shown)
                    async for pieces in self.pieces(ticket):
                        for stream, text in pieces:
                            yield chunk(base + int(stream), text)
                    for j, sample in enumerate(ticket.samples):
                        completion_tokens += sample.tokens
                        yield chunk(base + j, "", sample.finish_reason)
            finally:
                for ticket, _ in tickets:
                    ticket.cancelled = True
            if asked.include_usage:
                yield data({**identity, "choices": [], "usage": self.usage(tickets, completion_tokens)})
            yield "data: [DONE]\n\n"

    # --- what every route shares ---

    async def body(self, request: Request) -> dict:
        return await json_object(request, self.limits.body_bytes, self.limits.body_seconds)

    def in_flight(self):
        return InFlight(self)


class InFlight:
    """Counts a request in flight for /healthz."""

    def __init__(self, server: Server):
        self.server = server

    def __enter__(self):
        self.server.active += 1

    def __exit__(self, *exc):
        self.server.active -= 1


def event(kind: str, data_: dict) -> str:
    return f"event: {kind}\ndata: {json.dumps(data_, ensure_ascii=False)}\n\n"


def data(value: dict) -> str:
    return f"data: {json.dumps(value, ensure_ascii=False)}\n\n"


class Guard:
    """ASGI middleware: the API key (every route but /healthz and the page needs it when one is
    set) and the cap on requests in flight (429 beyond it)."""

    def __init__(self, app, server: Server):
        self.app, self.server = app, server
        self.expected = f"Bearer {server.api_key}".encode() if server.api_key else None
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        openai_route = path.startswith(("/v1/completions", "/v1/models"))
        if self.expected is not None and path not in OPEN:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                return await refuse(scope, receive, send, 401, "a valid API key is needed: Authorization: Bearer KEY",
                                    openai_route, "invalid_api_key")
        if path in OPEN:
            return await self.app(scope, receive, send)
        if self.in_flight >= self.server.limits.max_concurrent:
            return await refuse(scope, receive, send, 429, f"the server is busy: {self.server.limits.max_concurrent} "
                                f"requests are in flight; try again shortly", openai_route, "rate_limit_exceeded")
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


async def refuse(scope, receive, send, status: int, message: str, openai_route: bool, code: str):
    body = openai.APIError(message, status=status, code=code).body() if openai_route else {"error": message,
                                                                                           "field": None}
    headers = {401: {"WWW-Authenticate": "Bearer"}, 429: {"Retry-After": "1"}}.get(status)  # 429: clients back off
    await JSONResponse(body, status_code=status, headers=headers)(scope, receive, send)


def create_app(model, params, vocab, meta: dict, limits: ServerLimits = ServerLimits(), workers: int = 0,
               model_id: str = "charrnn", api_key: str | None = None, created: int = 0) -> Starlette:
    """The ASGI application serving one loaded model; beam search and scoring in `workers` threads
    (0: one per core), sampling in one continuous batch."""
    server = Server(model, params, vocab, meta, limits, resolve_threads(workers), model_id, api_key, created)

    @asynccontextmanager
    async def lifespan(app):
        server.outbox.loop = asyncio.get_running_loop()
        server.outbox.loop.set_exception_handler(loop_exception_handler())
        server.batch.start()
        try:
            yield
        finally:
            server.batch.close()
            server.pool.shutdown(wait=False, cancel_futures=True)

    routes = [Route("/v1/generate", server.generate, methods=["POST"]),
              Route("/v1/score", server.score, methods=["POST"]),
              Route("/v1/model", server.model_info, methods=["GET"]),
              Route("/v1/completions", server.completions, methods=["POST"]),
              Route("/v1/models", server.models, methods=["GET"]),
              Route("/v1/models/{id:path}", server.model_by_id, methods=["GET"]),
              Route("/healthz", server.health, methods=["GET"]),
              Route("/", server.page, methods=["GET"])]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={BadRequest: bad_request, openai.APIError: api_error,
                                        HTTPException: http_error, Exception: internal_error})
    app.state.server = server
    return Guard(app, server)
