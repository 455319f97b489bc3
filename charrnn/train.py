"""The training loop: truncated BPTT over stateful batches, evaluation, early stopping.

It never prints and never touches files: it reports through `report(kind, record)` and asks
`save(state, names)` to write checkpoints, both supplied by the caller. Everything that decides
the next step (parameters, optimizer state, carried hidden state, RNG, data cursor) is in
`TrainingState`, so a run resumed from a checkpoint continues bit for bit.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from charrnn.config import Config
from charrnn.data import StreamBatcher
from charrnn.evaluate import score
from charrnn.model import RNNLM, State
from charrnn.optim import clip_by_global_norm, learning_rate, make_optimizer
from charrnn.parallel import ShardedModel


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint."""

    step: int = 0  # optimizer steps done
    epoch: int = 0
    position: int = 0  # batch index within the epoch
    tokens: int = 0
    elapsed: float = 0.0  # seconds of training, summed over resumed sessions
    train_loss: float | None = None  # running mean since the last log line
    best_val: float | None = None
    best_step: int | None = None
    last_val: float | None = None
    evals_since_best: int = 0


@dataclass
class TrainingState:
    params: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray]
    hidden: State
    rng: np.random.Generator
    progress: Progress = field(default_factory=Progress)


class Trainer:
    """Trains `model` on the train split, validating on the val split."""

    def __init__(self, config: Config, model: RNNLM, train_tokens: np.ndarray, val_tokens: np.ndarray,
                 report: Callable[[str, dict], None], save: Callable[[TrainingState, tuple[str, ...]], None]):
        self.config, self.cfg, self.model = config, config.train, model
        self.sharded = ShardedModel(model, config.train.threads)
        self.batcher = StreamBatcher(train_tokens, self.cfg.batch_size, self.cfg.seq_len)
        self.val_tokens = val_tokens[: self.cfg.eval_tokens] if self.cfg.eval_tokens else val_tokens
        self.optimizer = make_optimizer(self.cfg)
        self.report, self.save = report, save

    def initial_state(self) -> TrainingState:
        """Fresh parameters and optimizer state from the seed."""
        rng = np.random.default_rng(self.cfg.seed)
        params = self.model.init_params(rng)
        return TrainingState(params, self.optimizer.init(params), self.model.initial_state(self.cfg.batch_size), rng)

    def stop_reason(self, progress: Progress, should_stop: Callable[[], str | None]) -> str | None:
        cfg = self.cfg
        if (reason := should_stop()) is not None:
            return reason
        if progress.step >= cfg.max_steps:
            return "max_steps"
        if cfg.max_epochs is not None and progress.epoch >= cfg.max_epochs:
            return "max_epochs"
        if self.config.max_seconds is not None and progress.elapsed >= self.config.max_seconds:
            return "max_time"
        if cfg.patience is not None and progress.evals_since_best >= cfg.patience:
            return "early_stop"
        return None

    def run(self, state: TrainingState, should_stop: Callable[[], str | None] = lambda: None) -> str:
        """Train until a stop condition; returns why it stopped. Saves `last` at the end unless the
        loss went non-finite, in which case the previous checkpoints are left as they were."""
        try:
            with np.errstate(over="ignore", invalid="ignore"):  # non-finite values are caught below
                return self._run(state, should_stop)
        finally:
            self.sharded.close()

    def _run(self, state: TrainingState, should_stop: Callable[[], str | None]) -> str:
        cfg, progress = self.cfg, state.progress
        losses: list[float] = []
        clock = time.perf_counter()
        while (reason := self.stop_reason(progress, should_stop)) is None:
            if progress.position == 0:
                state.hidden = self.model.initial_state(cfg.batch_size)
            x, y = self.batcher.batch(progress.position)
            masks = self.model.dropout_masks(state.rng, cfg.seq_len, cfg.batch_size)
            loss, grads, final = self.sharded.loss_and_grads(state.params, x, y, state.hidden, masks)
            norm = clip_by_global_norm(grads, cfg.clip_norm)
            if not (math.isfinite(loss) and math.isfinite(norm)):
                self.report("non_finite", {"step": progress.step, "loss": loss})
                return "non_finite"
            lr = learning_rate(cfg, progress.step, progress.epoch)
            self.optimizer.step(state.params, grads, state.optimizer, lr)
            state.hidden = final
            progress.step += 1
            progress.tokens += x.size
            progress.position += 1
            if progress.position == self.batcher.steps_per_epoch:
                progress.position, progress.epoch = 0, progress.epoch + 1
            now = time.perf_counter()
            progress.elapsed += now - clock
            clock = now
            losses.append(loss)
            self.report("step", {"step": progress.step, "loss": loss, "lr": lr, "tokens": progress.tokens,
                                 "elapsed": progress.elapsed})
            if progress.step % cfg.log_every == 0:
                progress.train_loss = float(np.mean(losses))
                losses.clear()
                self.report("log", self.record(progress, lr))
            if progress.step % cfg.eval_every == 0:
                self.validate(state, lr, count_patience=True)
            if progress.step % cfg.checkpoint_every == 0:
                self.save(state, ("last", f"step-{progress.step}"))
            clock = time.perf_counter()
        if progress.step % cfg.eval_every != 0 and progress.step > 0:
            if losses:
                progress.train_loss = float(np.mean(losses))
            self.validate(state, learning_rate(cfg, max(0, progress.step - 1), progress.epoch), count_patience=False)
        self.save(state, ("last",))
        return reason

    def validate(self, state: TrainingState, lr: float, count_patience: bool):
        """Score the val split; keep `best` when it improves. The evaluation after the last step does
        not count towards patience, so stopping and resuming does not change when early stopping fires."""
        progress = state.progress
        if len(self.val_tokens) < 2:
            self.save(state, ("best",))
            return
        streams = max(1, min(self.cfg.batch_size, (len(self.val_tokens) - 1) // self.cfg.seq_len))
        progress.last_val = score(self.sharded, state.params, self.val_tokens, streams, chunk=256).nats_per_token
        improved = progress.best_val is None or progress.last_val < progress.best_val
        if improved:
            progress.best_val, progress.best_step, progress.evals_since_best = progress.last_val, progress.step, 0
        elif count_patience:
            progress.evals_since_best += 1
        self.report("eval", {**self.record(progress, lr), "improved": improved})
        if improved:
            self.save(state, ("best",))

    def record(self, progress: Progress, lr: float) -> dict:
        """One metrics line: step, epoch, tokens, losses, lr, throughput, wall time."""
        return {"step": progress.step, "epoch": progress.epoch, "tokens": progress.tokens,
                "train_loss": progress.train_loss, "val_loss": progress.last_val, "lr": lr,
                "tokens_per_s": progress.tokens / progress.elapsed if progress.elapsed else None,
                "wall_time": round(progress.elapsed, 3)}

