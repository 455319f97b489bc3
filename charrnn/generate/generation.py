"""A generation request and its answer: sampling with stop strings and best-of-N, or beam search.

`charrnn sample`, its interactive prompt and `charrnn serve` all take a `GenerationRequest`,
validated by the same rules (and, for the server, within `Limits`), and iterate a `Generation`:
each step yields the new text of each sample, so a caller can stream it; afterwards
`generation.samples` holds the results. The same request and seed give the same text wherever
it is run.

- **Stop strings.** A sample ends when its text contains one of `stop`; the stop string and
  anything after it are cut off. While a stop string could still be starting, the text that may
  belong to it is held back, so a streamed sample never shows part of one.
- **Best-of-N.** N samples are drawn per result, and the one with the highest mean
  log-probability (under the untempered model) is kept; nothing streams until all are done.
- **Beam search** (`beam` = K): the most likely continuation of `length` tokens; see
  `charrnn.generate.beam` for the search and its length normalisation. It is deterministic, so
  temperature, top-k, top-p and seed do not apply.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Iterator

import numpy as np

from charrnn.generate.beam import beam_search
from charrnn.generate.jobs import Sample, SamplingJob, settings_of, step_jobs
from charrnn.generate.sample import SamplingSettings, SettingError, encode_prime, primed_stepper
from charrnn.user_text import invalid_at


@dataclass(frozen=True)
class Limits:
    """Caps on what one request may ask for (the server's; the command line has none)."""

    length: int = 2000
    samples: int = 16  # num_samples x best_of
    beam: int = 16
    prime_chars: int = 10_000
    stops: int = 8
    stop_chars: int = 100


NO_LIMITS = Limits(length=1 << 40, samples=1 << 40, beam=1 << 40, prime_chars=1 << 40, stops=1 << 40,
                   stop_chars=1 << 40)


@dataclass(frozen=True)
class GenerationRequest:
    """What to generate: the same fields as `charrnn sample`'s flags and the API's JSON."""

    prime: str = ""
    length: int = 500
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    num_samples: int = 1
    stop: tuple[str, ...] = ()
    beam: int | None = None
    best_of: int | None = None

    @property
    def sampling(self) -> SamplingSettings:
        return SamplingSettings(self.temperature, self.top_k, self.top_p)

    @property
    def streams(self) -> int:
        return self.num_samples * (self.best_of or 1)

    def validate(self, limits: Limits = NO_LIMITS):
        """Raise `SettingError` naming the first setting that is out of range."""
        self.sampling.validate()
        within = (("length", self.length, limits.length), ("num_samples", self.num_samples, limits.samples),
                  ("best_of", self.best_of, limits.samples), ("beam", self.beam, limits.beam))
        for name, value, cap in within:
            if value is not None and not 1 <= value <= cap:
                raise SettingError(name, f"must be between 1 and {cap:,}, not {value}")
        if self.streams > limits.samples:
            raise SettingError("best_of", f"times num_samples must be at most {limits.samples:,}, not {self.streams}")
        if self.seed is not None and not 0 <= self.seed < 2 ** 63:
            raise SettingError("seed", f"must be between 0 and 2**63 - 1, not {self.seed}")
        for name, text in (("prime", self.prime), *(("stop", stop) for stop in self.stop)):
            if (where := invalid_at(text)) is not None:
                raise SettingError(name, f"is not valid UTF-8 text ({where})")
        if len(self.prime) > limits.prime_chars:
            raise SettingError("prime", f"must be at most {limits.prime_chars:,} characters, not {len(self.prime):,}")
        if len(self.stop) > limits.stops:
            raise SettingError("stop", f"may be given at most {limits.stops} times, not {len(self.stop)}")
        for text in self.stop:
            if not text or len(text) > limits.stop_chars:
                raise SettingError("stop", f"strings must have 1 to {limits.stop_chars} characters, not {len(text)}")
        if self.beam is not None and (self.num_samples > 1 or self.best_of is not None):
            raise SettingError("beam", "search gives one continuation; leave out num_samples and best_of")

    def with_seed(self) -> GenerationRequest:
        """This request with a seed: its own, or a fresh random one (reported back to the user)."""
        if self.seed is not None or self.beam is not None:
            return self
        return GenerationRequest(**{**asdict(self), "seed": int(np.random.SeedSequence().entropy % 2 ** 32)})


@dataclass
class Context:
    """Where one stream stands in a conversation: its state, and its last token, not yet read."""

    state: object
    pending: int


class Generation:
    """Iterate to generate: each step yields [(sample index, new text)]; then `samples` is set.

    With a `context` (the interactive prompt), the prime is read after everything before it
    and `context` afterwards holds where the (single) stream stands.
    """

    def __init__(self, model, params, vocab, request: GenerationRequest, context: Context | None = None):
        self.model, self.params, self.vocab, self.request = model, params, vocab, request
        self.context = context
        if context is None:
            self.prime_ids, self.shown_prime, self.mapped = encode_prime(request.prime, vocab)
        else:
            ids, self.shown_prime, self.mapped = encode_prime(request.prime, vocab) if request.prime else ([], "", [])
            self.prime_ids = np.array([context.pending, *ids], dtype=np.int64)
        self.samples: list[Sample] | None = None

    @property
    def streaming(self) -> bool:
        """Whether text arrives step by step (best-of and beam search only know it at the end)."""
        return self.request.best_of is None and self.request.beam is None

    def __iter__(self) -> Iterator[list[tuple[int, str]]]:
        if self.request.beam is not None:
            yield from self.beam_search()
        else:
            yield from self.sample()

    def sample(self) -> Iterator[list[tuple[int, str]]]:
        """Draw the request's samples as one job (`charrnn.generate.jobs`), the batch its own."""
        start = self.context.state if self.context is not None else None
        stepper, current = primed_stepper(self.model, self.params, self.prime_ids, self.request.streams, start)
        job = SamplingJob(self.request, np.array(self.vocab.tokens, dtype=object))
        settings, plain = settings_of([job])
        while not job.finished:
            current, (pieces,) = step_jobs(stepper.step(current), [job], settings, plain)
            if self.streaming and pieces:
                yield pieces
        rest, results = job.finish()
        if self.streaming and rest:
            yield rest
        results = [replace(r, text=self.shown_prime + r.text) for r in results]
        if self.request.best_of is not None:
            results = [results[i] for i in job.best_of(results)]
            yield [(i, r.completion) for i, r in enumerate(results) if r.completion]
        self.samples = results
        if self.context is not None:
            self.context = Context(stepper.state, int(current[0]))

    def beam_search(self) -> Iterator[list[tuple[int, str]]]:
        start = self.context.state if self.context is not None else None
        found = beam_search(self.model, self.params, self.vocab, self.prime_ids, self.request.length,
                            self.request.beam, self.request.stop, start)
        self.samples = [Sample(self.shown_prime + found.text, found.text, found.mean_logprob, found.tokens,
                               found.finish_reason)]
        if self.context is not None:
            self.context = Context(found.state, found.pending)
        if found.text:
            yield [(0, found.text)]


def settings_record(request: GenerationRequest, shown_prime: str) -> dict:
    """The settings a result was made with, as `--json` and the API report them."""
    record = {k: v for k, v in asdict(request).items() if k != "prime"}
    record["stop"] = list(request.stop)
    record["prime"] = shown_prime
    return record
