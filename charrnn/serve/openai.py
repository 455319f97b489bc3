"""OpenAI's legacy text-completions API over charrnn's tokens: what clients written for OpenAI,
llama.cpp's server, Ollama or vLLM send and expect (`POST /v1/completions`, `GET /v1/models`).

A token is one of the model's: a character, or a word token for a word-level model.
`completion_request` turns a body into one `GenerationRequest` per prompt (n choices each,
drawn as best_of and the n likeliest kept), refusing in OpenAI's error shape whatever it cannot
honour: a field OpenAI defines that means nothing here (`suffix`) or is not implemented
(`presence_penalty`, `frequency_penalty` other than 0), a prompt of token ids, logprobs with
stream. `choice` and `chunk` shape the answers; the text is the text `charrnn sample` gives with
the same settings and seed.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import numpy as np

from charrnn.generate.generation import GenerationRequest, Limits
from charrnn.generate.sample import SettingError
from charrnn.user_text import invalid_at

MAX_LOGPROBS = 5
MAX_STOPS = 4
DEFAULT_MAX_TOKENS = 16  # OpenAI's default for completions
IGNORED = ("user",)  # an end user's id, for the operator's logs: nothing to do here
NOT_IMPLEMENTED = ("presence_penalty", "frequency_penalty")  # accepted at 0 (or null) only


class APIError(Exception):
    """A request refused with OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, message: str, param: str | None = None, status: int = 400,
                 kind: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.param, self.status, self.kind, self.code = param, status, kind, code

    def body(self) -> dict:
        return {"error": {"message": str(self), "type": self.kind, "param": self.param, "code": self.code}}


@dataclass
class Completion:
    """A checked completion request: one generation request per prompt, and how to answer."""

    requests: list[GenerationRequest]
    n: int
    stream: bool
    include_usage: bool
    logprobs: int | None
    echo: bool
    model: str


def expect(body: dict, name: str, kinds: tuple, what: str, default=None):
    """body[name] if it is of `kinds` (booleans are never numbers), else an APIError naming it."""
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise APIError(f"{name} must be {what}", name)
    return value


def prompts_of(body: dict) -> list[str]:
    prompt = body.get("prompt", "")
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(p, (int, list)) for p in prompt):
        raise APIError("prompt as token ids is not supported: send the text", "prompt")
    raise APIError("prompt must be a string or a list of strings", "prompt")


def stops_of(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    stops = (stop,) if isinstance(stop, str) else tuple(stop) if isinstance(stop, list) else None
    if stops is None or not all(isinstance(s, str) for s in stops):
        raise APIError("stop must be a string or a list of up to 4 strings", "stop")
    if len(stops) > MAX_STOPS:
        raise APIError(f"stop may hold at most {MAX_STOPS} strings, not {len(stops)}", "stop")
    return stops


def completion_request(body: dict, model_id: str, limits: Limits, known: set[str]) -> Completion:
    """Check a /v1/completions body -> the requests to draw (see the module docstring)."""
    unknown = [name for name in body if name not in known]
    if unknown:
        raise APIError(f"unknown field {unknown[0]!r}", unknown[0])
    model = expect(body, "model", (str,), "a string")
    if model is None:
        raise APIError("model is required: the model's id, as GET /v1/models lists it", "model")
    if model != model_id:
        raise APIError(f"the model {model!r} does not exist; this server has {model_id!r}", "model", 404,
                       code="model_not_found")
    if body.get("suffix") not in (None, ""):
        raise APIError("suffix is not supported: a character model continues text, it does not fill it in", "suffix")
    for name in NOT_IMPLEMENTED:
        if expect(body, name, (int, float), "a number", 0) != 0:
            raise APIError(f"{name} is not implemented by charrnn; leave it out or at 0", name)
    if body.get("logit_bias") not in (None, {}):
        raise APIError("logit_bias is not implemented by charrnn; leave it out", "logit_bias")
    stream = expect(body, "stream", (bool,), "true or false", False)
    options = expect(body, "stream_options", (dict,), "an object", {})
    if options and not stream:
        raise APIError("stream_options applies to stream: true", "stream_options")
    if set(options) - {"include_usage"}:
        raise APIError(f"unknown stream option {sorted(set(options) - {'include_usage'})[0]!r}", "stream_options")
    include_usage = expect(options, "include_usage", (bool,), "true or false", False)
    logprobs = expect(body, "logprobs", (int,), "an integer from 0 to 5")
    if logprobs is not None and not 0 <= logprobs <= MAX_LOGPROBS:
        raise APIError(f"logprobs must be between 0 and {MAX_LOGPROBS}, not {logprobs}", "logprobs")
    if logprobs is not None and stream:
        raise APIError("logprobs with stream is not supported; ask without stream", "logprobs")
    n = expect(body, "n", (int,), "an integer", 1)
    best_of = expect(body, "best_of", (int,), "an integer", n)
    if best_of < n:
        raise APIError(f"best_of must be at least n ({n}), not {best_of}", "best_of")
    if best_of != n and stream:
        raise APIError("best_of cannot be used with stream: the best is known only at the end", "best_of")
    settings = {"length": expect(body, "max_tokens", (int,), "an integer", DEFAULT_MAX_TOKENS),
                "temperature": float(expect(body, "temperature", (int, float), "a number", 1.0)),
                "top_p": expect(body, "top_p", (int, float), "a number"),
                "top_k": expect(body, "top_k", (int,), "an integer"),
                "seed": expect(body, "seed", (int,), "an integer"),
                "stop": stops_of(body)}
    if settings["top_p"] is not None:
        settings["top_p"] = None if settings["top_p"] == 1 else float(settings["top_p"])
    if settings["top_k"] is not None and settings["top_k"] <= 0:  # vLLM's convention: 0 or -1 means all
        settings["top_k"] = None
    requests = []
    for prompt in prompts_of(body):
        request = GenerationRequest(prime=prompt, num_samples=best_of, **settings)
        try:
            request.validate(limits)
        except SettingError as error:
            name = {"length": "max_tokens", "num_samples": "best_of", "prime": "prompt"}.get(error.field, error.field)
            raise APIError(f"{name} {error.rule}", name) from None
        requests.append(request.with_seed())
    echo = expect(body, "echo", (bool,), "true or false", False)
    return Completion(requests, n, stream, include_usage, logprobs, echo, model)


def check_text_fields(body: dict):
    """Refuse a string that is not valid Unicode (a lone surrogate from a \\ud800 escape) anywhere in the body."""
    pending = list(body.items())
    while pending:
        key, value = pending.pop()
        for text in (key, value):
            if isinstance(text, str) and (where := invalid_at(text)) is not None:
                field = key.encode("utf-8", "backslashreplace").decode("utf-8") if isinstance(key, str) else None
                raise APIError(f"the field {field!r} is not valid UTF-8 text ({where})", field)
        if isinstance(value, dict):
            pending.extend((key, v) for v in value.values())
            pending.extend((k, None) for k in value)
        elif isinstance(value, list):
            pending.extend((key, v) for v in value)


def completion_id() -> str:
    return "cmpl-" + secrets.token_hex(12)


def kept(samples: list, n: int) -> list[int]:
    """The indices of the n likeliest samples by mean log-probability (all of them when n is all),
    in the order they were drawn."""
    if len(samples) == n:
        return list(range(n))
    order = sorted(range(len(samples)), key=lambda i: samples[i].mean_logprob, reverse=True)
    return sorted(order[:n])


def logprobs_of(vocab, prompt_ids: np.ndarray, prime_logprobs: np.ndarray | None, record, k: int,
                echo: bool, offset: int, completion: str) -> dict:
    """OpenAI's logprobs object of one choice: each token's text, its log-probability, the k
    likeliest alternatives and the character offset where it starts (from the prompt's start
    with echo, where the prompt's first token has no log-probability, else from the prompt's end);
    `prompt_ids` are the tokens of the prompt as shown, `completion` the choice's text."""
    tokens, values, tops = [], [], []
    if echo:
        for t, token in enumerate(prompt_ids):
            tokens.append(vocab.tokens[token])
            if t == 0 or prime_logprobs is None:
                values.append(None)
                tops.append(None)
                continue
            row = prime_logprobs[t - 1]
            values.append(float(row[token]))
            best = np.argsort(-row, kind="stable")[:k]
            tops.append({vocab.tokens[i]: float(row[i]) for i in best})
    shown = 0
    for token, value, ids, logps in zip(record.ids, record.logprobs, record.top_ids, record.top_logprobs):
        if shown >= len(completion):  # the tokens of a stop string, cut from the text, are left out here too
            break
        shown += len(vocab.tokens[token])
        tokens.append(vocab.tokens[token])
        values.append(value)
        tops.append({vocab.tokens[i]: lp for i, lp in zip(ids[:k], logps[:k])})
    offsets, at = [], 0 if echo else offset
    for token in tokens:
        offsets.append(at)
        at += len(token)
    return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}
