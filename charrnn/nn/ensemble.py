"""An ensemble: several language models over one vocabulary whose predictions are averaged,

    p(x) = (1/K) sum_k p_k(x),

the mixture that networks trained from different seeds improve most by (on Tiny Shakespeare two
30-minute GRUs scoring 1.428 and 1.438 alone score 1.405 together: BENCHMARKS.md). `Ensemble`
and `EnsembleStepper` read like `RNNLM` and its `Stepper` where text is generated (sampling, beam
search, the prompt, the server's batch), so every generator works with either; the logits they
return are log p, which a softmax (and a temperature) takes as it takes any logits. Scoring a text
needs no stepper: each member scores it alone and the per-token probabilities are averaged
(`mean_nll`), which also lets each member adapt on its own under dynamic evaluation; `token_nll`
does the same for a stream fed in chunks (the server's /v1/score).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from charrnn.nn import head
from charrnn.nn.model import RNNLM, Reading, State, Stepper


@dataclass
class EnsembleState:
    """One `State` per member, each for the same B streams."""

    members: list[State]

    def rows(self, rows) -> EnsembleState:
        """The state of streams `rows` in every member (see `State.rows`)."""
        return EnsembleState([state.rows(rows) for state in self.members])

    @staticmethod
    def joined(states: list[EnsembleState]) -> EnsembleState:
        """States of several batches -> one batch, their streams in order, member by member."""
        return EnsembleState([State.joined(list(parts)) for parts in zip(*(s.members for s in states))])


class Ensemble:
    """K models over the same vocabulary, trained apart; `params` is a list of their K parameter dicts."""

    def __init__(self, models: list[RNNLM]):
        self.models = models
        self.config = models[0].config  # what each member's memory estimate is made from
        self.vocab_size, self.dtype = models[0].vocab_size, models[0].dtype

    def initial_state(self, batch: int) -> EnsembleState:
        return EnsembleState([model.initial_state(batch) for model in self.models])

    def token_nll(self, params: list[dict[str, np.ndarray]], tokens: np.ndarray, targets: np.ndarray,
                  state: EnsembleState) -> tuple[np.ndarray, EnsembleState]:
        """tokens, targets (T, B) -> (the mixture's NLL of every target in nats (T, B), final state)."""
        scored = [model.token_nll(p, tokens, targets, s) for model, p, s in zip(self.models, params, state.members)]
        return mean_nll(np.stack([nll for nll, _ in scored])), EnsembleState([final for _, final in scored])

    def stepper(self, params: list[dict[str, np.ndarray]], batch: int) -> EnsembleStepper:
        return EnsembleStepper([model.stepper(p, batch) for model, p in zip(self.models, params)])


class EnsembleStepper(Reading):
    """The members' steppers read side by side: `read(tokens (T, B)) -> log p (T, B, V)` of the mixture
    (so `step` and `nll` are the mixture's)."""

    def __init__(self, members: list[Stepper]):
        self.members = members

    @property
    def state(self) -> EnsembleState:
        return EnsembleState([stepper.state for stepper in self.members])

    def reset(self, state: EnsembleState):
        for stepper, member_state in zip(self.members, state.members):
            stepper.reset(member_state)

    def resized(self, batch: int) -> EnsembleStepper:
        """Steppers for `batch` streams from zeros, sharing the prepared weights (`Stepper.resized`)."""
        return EnsembleStepper([stepper.resized(batch) for stepper in self.members])

    def read(self, tokens: np.ndarray, logits: bool = True) -> np.ndarray | None:
        """tokens (T, B) -> log of the members' mean probability of each next token (T, B, V), float64;
        with `logits` False only the states move on."""
        outputs = [stepper.read(tokens, logits) for stepper in self.members]
        if not logits:
            return None
        return -mean_nll(np.stack([-head.log_softmax(z.astype(np.float64)) for z in outputs]))


def network_count(model) -> int:
    """How many networks a model (an `RNNLM` or an `Ensemble`) holds: what memory estimates multiply by."""
    return len(model.models) if isinstance(model, Ensemble) else 1


def mean_nll(nll: np.ndarray) -> np.ndarray:
    """The K members' NLLs of the same tokens (K, ...) -> the NLL of their mean probability (...):
    -log((1/K) sum_k exp(-nll_k)), computed without underflow."""
    nll = np.asarray(nll, np.float64)
    least = nll.min(axis=0)
    return least - np.log(np.exp(least - nll).mean(axis=0))
