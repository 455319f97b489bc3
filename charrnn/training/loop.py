"""The training loop: truncated BPTT over stateful batches, evaluation, early stopping.

It never prints and never touches files: it reports through `report(kind, record)` and asks
`save(state, names)` to write checkpoints, both supplied by the caller. Everything that decides
the next step (parameters, optimizer state, carried hidden state, RNG, data cursor) is in
`TrainingState`, so a run resumed from a checkpoint continues bit for bit.

What it guarantees at the edges:
- Nothing broken is saved. Before every save the parameters are probed: their loss on the next
  training batch (one forward pass, no RNG drawn, nothing changed) must be finite and within
  the divergence rule, and no parameter or optimizer value may be non-finite. A failed probe,
  a non-finite loss or gradient norm, or a non-finite validation loss stops the run
  ("non_finite" or "diverged") before anything is written, so the checkpoints on disk are the
  last good ones. NaN is never "best".
- Divergence: a training loss (a step's or a probe's) or validation loss above
  `diverge_ratio x ln V`, that many times the loss of guessing uniformly among V tokens, stops
  the run ("diverged").
- Early stopping counts only the scheduled evaluations (every `eval_every` steps). The extra
  evaluation when a run ends between them may write `best` but never moves the patience
  counter, so a run stopped and resumed stops at the same step as one never stopped.
- A stop asked from outside (`should_stop`, e.g. Ctrl-C) saves `last` at once, without that
  extra evaluation, so nobody waits for a pass over a large validation split.
Only `max_time` depends on the wall clock; every other stopping rule is exact across resumes.

A schedule fitted to the time: with a cosine schedule or a weight average but neither `max_steps`
nor `max_epochs`, the horizon is the number of steps that fit in `max_time` (less a margin of
`1 - TIME_MARGIN`), at the pace of the `PACE_STEPS` steps before the warm-up ends (`pace_window`);
until then the cosine holds its peak. The pace is kept in `Progress`, so a resumed run keeps the
same horizon (one stopped before the pace was fixed fixes it at the same step, from its own
steps), and one resumed with another `max_time` moves it in proportion. A "30-minute" recipe
then anneals in 30 minutes on a fast machine and a slow one alike, where a fixed `max_steps`
either leaves time unused or is cut by `max_time` before its learning rate has come down.

With `train.average`, each step after `average_start` of the run is folded into an average of
the weights (an exponential moving average, or the plain mean of those steps); validation, the
probe before a save, `best` and every use of the model (eval, sample, serve, export) take the
average, and training continues from the parameters themselves.

With several processes (`comm`, see `charrnn.training.distributed`) every process runs this loop on its
own streams. Every decision is taken from values that are the same on every process: the
combined loss and gradients, rank 0's clock, and stop requests, which are sampled at each step's
collective and acted on by all at the top of the next step.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from charrnn.config import Config
from charrnn.data.splits import StreamBatcher
from charrnn.nn.model import RNNLM, State
from charrnn.training.layout import LayoutChoice, apply_choice, choose_layout, times_anything
from charrnn.training.optim import all_finite, clip_by_global_norm, learning_rate, make_optimizer
from charrnn.training.parallel import ShardedModel

PACE_SKIP = 10  # steps of each session left out of the pace (their first products are slower)
PACE_STEPS = 50  # steps whose mean time fits a schedule to max_time
TIME_MARGIN = 0.97  # the share of max_time a fitted schedule plans for: the pace wanders


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint."""

    step: int = 0  # optimizer steps done
    epoch: int = 0
    position: int = 0  # batch index within the epoch
    tokens: int = 0
    elapsed: float = 0.0  # seconds of training, summed over resumed sessions
    train_loss: float | None = None  # running mean since the last log line
    best_val: float | None = None  # the val loss of best.npz (any evaluation)
    best_step: int | None = None
    last_val: float | None = None
    patience_best: float | None = None  # the best of the scheduled evaluations only
    evals_since_best: int = 0  # scheduled evaluations since patience_best improved
    averaged: int = 0  # steps folded into the weight average (train.average)
    step_seconds: float | None = None  # the pace that fitted the schedule to max_time, once measured


@dataclass
class TrainingState:
    params: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray]
    hidden: State
    rng: np.random.Generator
    progress: Progress = field(default_factory=Progress)
    average: dict[str, np.ndarray] | None = None  # the averaged weights, with train.average

    @property
    def model_params(self) -> dict[str, np.ndarray]:
        """The weights the model is judged and used by: the average once it has begun, else the parameters."""
        return self.average if self.average is not None and self.progress.averaged else self.params


def update_average(average: dict[str, np.ndarray], params: dict[str, np.ndarray], kind: str, decay: float,
                   count: int):
    """Fold the parameters in, in place: `ema`, avg <- decay * avg + (1 - decay) * params, from the
    parameters themselves at the first step; `tail`, the running mean of the `count` steps so far
    (Polyak averaging, as averaged SGD does over the last part of training)."""
    for name, value in params.items():
        if count == 1:
            np.copyto(average[name], value)
        elif kind == "ema":
            average[name] *= decay
            average[name] += (1 - decay) * value
        else:
            average[name] += (value - average[name]) / count


class Trainer:
    """Trains `model` on the train split, validating on the val split."""

    def __init__(self, config: Config, model: RNNLM, train_tokens: np.ndarray, val_tokens: np.ndarray,
                 report: Callable[[str, dict], None], save: Callable[[TrainingState, tuple[str, ...]], None],
                 comm=None):
        self.config, self.cfg, self.model = config, config.train, model
        self.sharded = ShardedModel(model, config.train.threads, self.cfg.batch_size, comm, self.cfg.step_products)
        self.batcher = StreamBatcher(train_tokens, self.cfg.batch_size, self.cfg.seq_len, self.sharded.rows)
        self.val_tokens = val_tokens[: self.cfg.eval_tokens] if self.cfg.eval_tokens else val_tokens
        self.optimizer = make_optimizer(self.cfg)
        cfg = self.cfg
        epochs = self.batcher.steps_per_epoch * cfg.max_epochs if cfg.max_epochs else None
        self.fixed_horizon = cfg.max_steps or epochs
        self.fits_time = self.fixed_horizon is None and (cfg.lr_schedule == "cosine" or cfg.average != "none")
        self.loss_limit = self.cfg.diverge_ratio * math.log(model.vocab_size) if self.cfg.diverge_ratio else math.inf
        self.report, self._save = report, save
        self.checked_step: int | None = None  # the step whose parameters a probe or validation found sane
        self.frozen = ("embedding.weight",) if config.model.freeze_embeddings else ()

    def initial_state(self) -> TrainingState:
        """Fresh parameters and optimizer state from the seed, with the hidden state of the whole batch
        (and, with train.average, the average it will hold, not yet begun)."""
        rng = np.random.default_rng(self.cfg.seed)
        params = self.model.init_params(rng)
        average = {k: v.copy() for k, v in params.items()} if self.cfg.average != "none" else None
        return TrainingState(params, self.optimizer.init(params), self.model.initial_state(self.cfg.batch_size), rng,
                             average=average)

    def horizon(self, progress: Progress) -> int | None:
        """The step the schedule ends at: max_steps, else max_epochs' steps, else the steps that fit
        in max_time at the measured pace (None until it is measured, or when nothing needs one)."""
        if self.fixed_horizon is not None or not self.fits_time or progress.step_seconds is None:
            return self.fixed_horizon
        return int(TIME_MARGIN * self.config.max_seconds / progress.step_seconds)

    def average_from(self, progress: Progress) -> int | None:
        """The step after which each step is folded into the average (None while the horizon it is a
        share of is not yet measured)."""
        horizon = self.horizon(progress)
        return 0 if self.cfg.average_start == 0 else None if horizon is None else int(self.cfg.average_start * horizon)

    def pace_window(self, first_step: int) -> tuple[int, int]:
        """The steps (from, to) whose mean time fixes the pace of a schedule fitted to max_time, for a
        session that begins at `first_step`: it ends where the warm-up does (at step
        `PACE_SKIP + PACE_STEPS` at the earliest), so a run resumed before then fixes it at the same
        step, and it leaves out the session's first `PACE_SKIP` steps where it can."""
        end = max(self.cfg.warmup_steps, PACE_SKIP + PACE_STEPS)
        if first_step >= end:  # a run that began with another horizon
            end = first_step + PACE_SKIP + PACE_STEPS
        return min(first_step + PACE_SKIP, end - 1), end

    def fix_pace(self, progress: Progress, step_seconds: float):
        """Fit the schedule to max_time at this pace, and say so."""
        progress.step_seconds = step_seconds
        self.report("horizon", {"step": progress.step, "horizon": self.horizon(progress),
                                "step_seconds": step_seconds, "max_time": self.cfg.max_time})

    def will_time_layout(self) -> bool:
        """Whether `choose_layout` without a known choice times anything (tens of seconds for a large model)."""
        return times_anything(self.sharded, self.sharded.rows.stop - self.sharded.rows.start, self.cfg.step_products)

    def choose_layout(self, state: TrainingState, known: LayoutChoice | None = None) -> LayoutChoice:
        """Settle `threads: 0` and `step_products: auto` by timing on the first batch (see
        `charrnn.training.layout.choose_layout`), or as `known` says (the choice timed before for
        these shapes on this machine), and record the choices in the config, so that a resumed run
        lays its work out alike and continues bit for bit."""
        if known is not None:
            apply_choice(self.sharded, known, state.params, self.sharded.rows.stop - self.sharded.rows.start)
            timed = self.sharded.automatic
        else:
            x, y = self.batcher.batch(state.progress.position)
            with np.errstate(over="ignore", invalid="ignore"):
                timed = bool(choose_layout(self.sharded, state.params, x, y, self.sharded.own_initial_state(),
                                           self.cfg.step_products))
        if timed:
            self.cfg.threads = self.sharded.workers
        self.cfg.step_products = self.sharded.step_products
        return LayoutChoice.of(self.sharded)

    def stop_reason(self, progress: Progress) -> str | None:
        cfg = self.cfg
        if cfg.max_steps is not None and progress.step >= cfg.max_steps:
            return "max_steps"
        if cfg.max_epochs is not None and progress.epoch >= cfg.max_epochs:
            return "max_epochs"
        if self.fits_time and (horizon := self.horizon(progress)) is not None and progress.step >= horizon:
            return "max_time"  # the steps planned for it are done
        if self.config.max_seconds is not None and progress.elapsed >= self.config.max_seconds:
            return "max_time"
        if cfg.patience is not None and progress.evals_since_best >= cfg.patience:
            return "early_stop"
        return None

    def run(self, state: TrainingState, should_stop: Callable[[], str | None] = lambda: None) -> str:
        """Train until a stop condition; returns why it stopped ("non_finite" and "diverged" leave the
        checkpoints as they were; any other reason saves `last`)."""
        try:
            with np.errstate(over="ignore", invalid="ignore"):  # non-finite values are caught below
                return self._run(state, should_stop)
        finally:
            self.sharded.close()

    def _run(self, state: TrainingState, should_stop: Callable[[], str | None]) -> str:
        cfg, progress = self.cfg, state.progress
        losses: list[float] = []
        start_step = progress.step
        trainable = {k: v for k, v in state.params.items() if k not in self.frozen}  # updated in place
        clock = time.perf_counter()
        requested = None  # a stop request agreed at the last step
        pace_from, pace_to = self.pace_window(start_step)  # a schedule fitted to max_time measures its pace
        pace_mark = progress.elapsed
        while True:
            if requested is not None:
                return self.save(state, ("last",)) or requested
            if (reason := self.stop_reason(progress)) is not None:
                break
            if progress.position == 0:
                state.hidden = self.sharded.own_initial_state()
            x, y = self.batcher.batch(progress.position)
            reg = self.model.regularisation(state.rng, cfg.seq_len, cfg.batch_size, cfg.activation_penalty,
                                            cfg.temporal_penalty)
            loss, grads, final = self.sharded.loss_and_grads(state.params, x, y, state.hidden, reg)
            loss, grads, progress.elapsed, requested = self.sharded.combine(
                loss, grads, progress.elapsed + time.perf_counter() - clock, should_stop())
            clock = time.perf_counter()
            for name in self.frozen:
                grads[name].fill(0)
            norm = clip_by_global_norm(grads, cfg.clip_norm)
            if failure := self.judge(loss if math.isfinite(norm) else math.nan, progress.step + 1):
                return failure
            lr = learning_rate(cfg, progress.step, progress.epoch, self.horizon(progress))
            self.optimizer.step(trainable, grads, state.optimizer, lr)
            state.hidden = final
            progress.step += 1
            if self.fits_time and progress.step_seconds is None:
                if progress.step == pace_from:
                    pace_mark = progress.elapsed
                elif progress.step == pace_to:
                    self.fix_pace(progress, (progress.elapsed - pace_mark) / (pace_to - pace_from))
            average_from = self.average_from(progress)
            if state.average is not None and average_from is not None and progress.step > average_from:
                progress.averaged += 1
                update_average(state.average, state.params, cfg.average, cfg.average_decay, progress.averaged)
            progress.tokens += x.shape[0] * cfg.batch_size  # the whole batch, whichever streams are read here
            progress.position += 1
            if progress.position == self.batcher.steps_per_epoch:
                progress.position, progress.epoch = 0, progress.epoch + 1
            losses.append(loss)
            self.report("step", {"step": progress.step, "loss": loss, "lr": lr, "tokens": progress.tokens,
                                 "elapsed": progress.elapsed})
            if progress.step % cfg.log_every == 0:
                progress.train_loss = float(np.mean(losses))
                losses.clear()
                self.report("log", self.record(progress, lr))
            if progress.step % cfg.eval_every == 0:
                if failure := self.validate(state, lr, scheduled=True):
                    return failure
                clock = time.perf_counter()  # validation time is not training time
            if progress.step % cfg.checkpoint_every == 0:
                if failure := self.save(state, ("last", f"step-{progress.step}")):
                    return failure
                clock = time.perf_counter()
        if progress.step % cfg.eval_every != 0 and progress.step > start_step:
            if losses:
                progress.train_loss = float(np.mean(losses))
            lr = learning_rate(cfg, progress.step - 1, progress.epoch, self.horizon(progress))
            if failure := self.validate(state, lr, scheduled=False):
                return failure
        return self.save(state, ("last",)) or reason

    def judge(self, loss: float, step: int) -> str | None:
        """'non_finite' or 'diverged' (reported, with the step at fault) for a loss that breaks the
        rules, else None."""
        failure = "non_finite" if not math.isfinite(loss) else "diverged" if loss > self.loss_limit else None
        if failure:
            self.report(failure, {"step": step, "loss": loss, "limit": self.loss_limit})
        return failure

    def probe(self, state: TrainingState) -> float:
        """The mean loss of the current parameters on the next training batch, changing nothing."""
        position = state.progress.position
        hidden = self.sharded.own_initial_state() if position == 0 else state.hidden
        x, y = self.batcher.batch(position)
        return self.sharded.mean_nll(state.model_params, x, y, hidden)

    def save(self, state: TrainingState, names: tuple[str, ...]) -> str | None:
        """Hand the state to the caller's `save` if it passes the probe (skipped when a validation of
        the same parameters already passed); else the failure, unsaved."""
        step = state.progress.step
        if not all_finite([*state.params.values(), *state.optimizer.values(), *(state.average or {}).values()]):
            return self.judge(math.nan, step)
        if self.checked_step != step and (failure := self.judge(self.probe(state), step)):
            return failure
        self.checked_step = step
        self._save(state, names)
        return None

    def validate(self, state: TrainingState, lr: float, scheduled: bool) -> str | None:
        """Score the val split and save `best` when it improves; the failure if the loss breaks
        the rules. Only scheduled evaluations move the patience counter (see the module docstring)."""
        progress = state.progress
        if len(self.val_tokens) < 2:
            return self.save(state, ("best",))
        streams = max(1, min(self.cfg.batch_size, (len(self.val_tokens) - 1) // self.cfg.seq_len))
        loss = self.sharded.score(state.model_params, self.val_tokens, streams, chunk=256).nats_per_token
        if failure := self.judge(loss, progress.step):
            return failure
        self.checked_step = progress.step
        progress.last_val = loss
        if scheduled:
            if progress.patience_best is None or loss < progress.patience_best:
                progress.patience_best, progress.evals_since_best = loss, 0
            else:
                progress.evals_since_best += 1
        improved = progress.best_val is None or loss < progress.best_val
        if improved:
            progress.best_val, progress.best_step = loss, progress.step
        self.report("eval", {**self.record(progress, lr), "improved": improved})
        return self.save(state, ("best",)) if improved else None

    def record(self, progress: Progress, lr: float) -> dict:
        """One metrics line: step, epoch, tokens, losses, lr, throughput, wall time."""
        return {"step": progress.step, "epoch": progress.epoch, "tokens": progress.tokens,
                "train_loss": progress.train_loss, "val_loss": progress.last_val, "lr": lr,
                "tokens_per_s": progress.tokens / progress.elapsed if progress.elapsed else None,
                "wall_time": round(progress.elapsed, 3)}
