"""The batcher: a worker thread that owns the model and generates every request in flight together.

Requests arrive as jobs (one row per prompt and per `n`) from the event loop, which never touches the
model. Between two decoding steps the worker admits waiting rows while the batch has room (up to
`max_batch`): it loads their adapter through the registry if need be, prefills them together and joins
them to the running batch (engine.KVBatch). Every step then advances every row by one token. A request
that arrives while others generate therefore starts at the next step, without waiting for them to end:
continuous batching at the granularity of one token. A row that ends (EOS, a stop sequence, max_tokens)
leaves the batch at once; so do the rows of a request whose client left or whose time ran out.

Results go back to the event loop as events on the job's asyncio queue (jobs.py): Update (text and
tokens of one row, and its end) or Failure (the whole job).

A failure is confined to what caused it: a job whose adapter cannot be loaded, whose prefill fails or whose
row cannot be sampled fails alone; a failed decoding step fails the rows in that step (their cache is
lost) and nothing queued. Every job the worker accepted is in `jobs` until it ends, so whatever stage it
reached, it gets an answer: its text, its failure, its timeout, or 503 when the worker stops or dies.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import torch

from .catalog import Target
from .engine import KVBatch
from .errors import AdapterChanged, ClientClosed, QueueFull, RequestTimeout, ServingError, ShuttingDown, WorkerStopped
from .jobs import Failure, Job, RowSpec, TokenInfo, Update
from .metrics import Metrics
from .registry import NoRoom, Registry
from .sampling import UNSAMPLEABLE, next_tokens, top
from .text import TextStream

log = logging.getLogger(__name__)

IDLE_SWEEP_SECONDS = 1.0  # how often an idle worker unloads adapters removed or changed in the store


@dataclass
class Row:
    """A row in flight."""

    job: Job
    spec: RowSpec
    peft_name: str
    text: TextStream
    generator: torch.Generator | None
    last: int | None = None  # the latest token, fed at the next step
    generated: int = 0
    finish_reason: str | None = None
    tokens: list[TokenInfo] = field(default_factory=list)  # not yet sent


class Batcher:
    def __init__(
        self, registry: Registry, tokenizer, metrics: Metrics, *, max_batch: int, max_queue: int, timeout: float
    ):
        self.registry, self.tokenizer, self.metrics = registry, tokenizer, metrics
        self.max_batch, self.max_queue, self.timeout = max_batch, max_queue, timeout
        self.eos = _eos_ids(registry.model, tokenizer)
        self.pad_id = tokenizer.pad_token_id
        self.device = _device(registry.model)
        self.lock = threading.Condition()
        self.waiting: deque[Job] = deque()  # guarded by lock
        self.jobs: set[Job] = set()  # every job accepted and not yet over, whatever its stage; guarded by lock
        self.queued_rows = 0  # rows of the waiting jobs not yet admitted; guarded by lock
        self.stopping = False
        self.cutoff: float | None = None  # when draining: the time at which what is left in flight gets 503
        self.failure: str | None = None  # why the worker died, if it did
        self.rows: list[Row] = []  # in flight, in the order of the batch's rows
        self.batch: KVBatch | None = None
        self.thread = threading.Thread(target=self._work, name="gpt2-adapt-batcher", daemon=True)

    # ---------------------------------------------------------------- the event loop's side

    def start(self) -> None:
        self.thread.start()

    @property
    def alive(self) -> bool:
        return self.failure is None and self.thread.is_alive()

    def submit(self, target: Target, rows: list[RowSpec], streamed: bool = False) -> Job:
        """Queue a request's rows; refused with 429 when the queue is full, 503 when shutting down or when
        the worker has died. A job that is not `streamed` hears of each row once, when it ends: no
        wake-up of the event loop per token."""
        job = Job(target, rows, self.timeout, streamed)
        with self.lock:
            if self.failure is not None:
                raise WorkerStopped(self.failure)
            if self.stopping or self.cutoff is not None:
                raise ShuttingDown("the server is shutting down; send the request to another instance or later")
            if self.queued_rows + len(rows) > self.max_queue:
                raise QueueFull(
                    f"the queue is full ({self.queued_rows} rows waiting, at most {self.max_queue}); retry later",
                    headers={"Retry-After": "1"},
                )
            self.waiting.append(job)
            self.jobs.add(job)
            self.queued_rows += len(rows)
            self.metrics.queue_rows.set(self.queued_rows)
            self.lock.notify()
        return job

    def drain(self, seconds: float) -> None:
        """Shutting down: refuse new requests from now (503), and in `seconds` end what is still in flight
        with 503, so that each request gets its answer (a stream its error event and [DONE]) before the
        server closes the connections."""
        with self.lock:
            self.cutoff = time.monotonic() + seconds
            self.lock.notify()

    def stop(self, timeout: float = 10.0) -> None:
        """End the worker: what is still queued or generating fails with 503."""
        with self.lock:
            self.stopping = True
            self.lock.notify()
        self.thread.join(timeout)

    # ---------------------------------------------------------------- the worker

    def _work(self) -> None:
        try:
            self._loop()
        except BaseException as err:  # the worker must not die silently, whatever killed it
            log.critical("the generation worker stopped", exc_info=True)
            self._fail_all(
                WorkerStopped(
                    f"the generation worker stopped ({type(err).__name__}); the server's log has "
                    "the details: restart the server"
                ),
                dead=True,
            )
        else:
            self._fail_all(ShuttingDown("the server shut down before this request was done"))

    def _loop(self) -> None:
        while True:
            with self.lock:
                if not self.jobs and not self.stopping and not self.lock.wait(IDLE_SWEEP_SECONDS):
                    self._quietly(self.registry.sweep)
                    self.metrics.loaded_adapters.set(self.registry.loaded)
                    continue
                if self.stopping:
                    return
            if self.cutoff is not None and time.monotonic() >= self.cutoff:
                self._fail_all(
                    ShuttingDown(
                        "the server is shutting down and its grace period ran out before this "
                        "request was done; send it again to another instance or later"
                    )
                )
                continue
            try:
                self._cycle()
            except Exception as err:  # a bug or out of memory in a decoding step: its rows fail, the server goes on
                log.exception("generation failed")
                self._fail_running(
                    ServingError(f"generation failed ({type(err).__name__}); the server's log has the details")
                )

    def _cycle(self) -> None:
        self._drop_stopped()
        self._admit()
        self._retire()
        if self.rows:
            logits = self.batch.step(self.registry.model, [r.last for r in self.rows], [r.peft_name for r in self.rows])
            self.metrics.batch_rows.observe(len(self.rows))
            self._advance_all(self.rows, logits)
            self._emit(self.rows)
            self._retire()
        self.metrics.running_rows.set(len(self.rows))
        self.metrics.loaded_adapters.set(self.registry.loaded)

    def _admit(self) -> None:
        """Move waiting rows into the batch while it has room, in the order they came."""
        room = self.max_batch - len(self.rows)
        with self.lock:
            jobs = list(self.waiting)
        admitted: list[Row] = []
        finished_waiting: list[Job] = []
        for job in jobs:
            if room <= 0:
                break
            if job.over:
                continue
            if job.peft_name is None:
                try:
                    job.peft_name = self.registry.acquire(job.target)
                    self._check_template(job)
                except NoRoom:  # every loaded adapter is generating: a later job may fit
                    continue
                except ServingError as err:
                    self._end(job, Failure(err))
                    continue
                except Exception as err:  # a bug in loading: this job fails, the others go on
                    log.exception("loading %s failed", job.target.description)
                    self._end(
                        job,
                        Failure(
                            ServingError(
                                f"loading {job.target.description} failed ({type(err).__name__}); "
                                "the server's log has the details"
                            )
                        ),
                    )
                    continue
            while job.waiting and room > 0:
                spec = job.waiting.popleft()
                incremental = job.streamed or bool(spec.stops) or spec.logprobs is not None
                admitted.append(
                    Row(
                        job,
                        spec,
                        job.peft_name,
                        TextStream(self.tokenizer, spec.stops, incremental),
                        spec.sampling.generator(self.device),
                    )
                )
                job.live += 1
                room -= 1
            if not job.waiting:
                finished_waiting.append(job)
        with self.lock:
            for job in finished_waiting:
                if job in self.waiting:
                    self.waiting.remove(job)
            self._count_queue()
        if admitted:
            self._prefill(admitted)

    def _check_template(self, job: Job) -> None:
        """The prompts were tokenized with the template the store held when the request came; an adapter
        retrained since with another template would be prompted wrongly."""
        loaded = self.registry.template(job.peft_name)
        if loaded != job.target.template:
            raise AdapterChanged(
                f"{job.target.description} was retrained with another prompt template ({loaded!r}, not "
                f"{job.target.template!r}) while this request waited; send it again",
                param="model",
            )

    def _prefill(self, rows: list[Row]) -> None:
        """Run the new rows' prompts, choose their first tokens, join them to the batch. Rows that report
        their prompt's log-probabilities need the logits of every position: they run apart."""
        model = self.registry.model
        scored = [r for r in rows if r.spec.echo and r.spec.logprobs is not None]
        for group in (scored, [r for r in rows if r not in scored]):
            if not group:
                continue
            try:
                batch, logits = KVBatch.prefill(
                    model,
                    [r.spec.prompt for r in group],
                    [r.peft_name for r in group],
                    self.pad_id,
                    self.device,
                    all_logits=group is scored,
                )
            except Exception as err:  # these rows' jobs fail; the rows generating already go on
                log.exception("prefill failed")
                for job in {r.job for r in group}:
                    self._end(
                        job,
                        Failure(
                            ServingError(f"generation failed ({type(err).__name__}); the server's log has the details")
                        ),
                    )
                continue
            for row, row_logits in zip(group, logits):
                self.metrics.prompt_tokens.labels(row.job.target.metric_label).inc(len(row.spec.prompt))
                if group is scored:
                    row.tokens += self._prompt_tokens(row.spec, row_logits[-len(row.spec.prompt) :])
                if row.spec.max_tokens == 0:
                    row.finish_reason = "length"
            last = logits[:, -1] if group is scored else logits
            self._advance_all([r for r in group if r.spec.max_tokens], last[[r.spec.max_tokens > 0 for r in group]])
            if self.batch is None:
                self.batch = batch
            else:
                self.batch.join(batch)
            self.rows += group
        self._emit(rows)

    def _advance_all(self, rows: list[Row], logits: torch.Tensor) -> None:
        """Each row's next token from its logits (one row of `logits` each), chosen for all at once."""
        if not rows:
            return
        tokens = next_tokens(logits, [r.spec.sampling for r in rows], [r.generator for r in rows])
        for row, row_logits, token in zip(rows, logits, tokens):
            if row.job.over:
                continue
            if token is None:  # this row's numbers, not the batch's: its request fails alone
                self._end(row.job, Failure(ServingError(UNSAMPLEABLE)))
            else:
                self._advance(row, row_logits, token)

    def _advance(self, row: Row, logits: torch.Tensor, token: int) -> None:
        """Record a row's next token, and end the row where it ends."""
        spec = row.spec
        offset = row.text.push(token)
        if spec.logprobs is not None:
            logprobs = torch.log_softmax(logits, dim=-1)
            row.tokens.append(
                TokenInfo(self._piece(token), float(logprobs[token]), self._top(logprobs, spec.logprobs, token), offset)
            )
        row.last, row.generated = token, row.generated + 1
        self.metrics.generated_tokens.labels(row.job.target.metric_label).inc()
        if row.job.first_token_at is None:
            row.job.first_token_at = time.monotonic()
            self.metrics.first_token_seconds.labels(row.job.target.metric_label).observe(
                row.job.first_token_at - row.job.created
            )
        if token in self.eos or row.text.stopped:
            row.finish_reason = "stop"
        elif row.generated >= spec.max_tokens:
            row.finish_reason = "length"

    def _prompt_tokens(self, spec: RowSpec, logits: torch.Tensor) -> list[TokenInfo]:
        """The prompt's tokens with the log-probability of each given the ones before (none for the first)."""
        logprobs = torch.log_softmax(logits, dim=-1)
        out, offset = [], 0
        for i, token in enumerate(spec.prompt):
            piece = self._piece(token)
            if i == 0:
                out.append(TokenInfo(piece, None, None, offset, prompt=True))
            else:
                out.append(
                    TokenInfo(
                        piece,
                        float(logprobs[i - 1, token]),
                        self._top(logprobs[i - 1], spec.logprobs, token),
                        offset,
                        prompt=True,
                    )
                )
            offset = len(self.tokenizer.decode(spec.prompt[: i + 1], skip_special_tokens=True))
        return out

    def _piece(self, token: int) -> str:
        return self.tokenizer.decode([token])

    def _top(self, logprobs: torch.Tensor, k: int, chosen: int) -> dict[str, float]:
        return {self._piece(t): v for t, v in top(logprobs, k, chosen)}

    def _emit(self, rows: list[Row]) -> None:
        """Send each row's new text and tokens, and its end, to its request."""
        by_job: dict[Job, list[Update]] = {}
        for row in rows:
            if row.job.over:  # failed or cancelled: its request has had its answer
                continue
            if not (row.job.streamed or row.finish_reason):  # its text goes in one piece, at its end
                continue
            text = row.text.rest() if row.finish_reason else row.text.ready()
            if not (text or row.tokens or row.finish_reason):
                continue
            by_job.setdefault(row.job, []).append(
                Update(row.spec.index, text, tuple(row.tokens), row.finish_reason, row.generated)
            )
            row.tokens = []
        for job, updates in by_job.items():
            job.send(*updates)

    def _retire(self) -> None:
        """Drop the rows that ended, and end the jobs whose rows all did."""
        ended = [r for r in self.rows if r.finish_reason or r.job.over]
        if not ended:
            return
        keep = [i for i, r in enumerate(self.rows) if not (r.finish_reason or r.job.over)]
        self.batch.keep(keep)
        self.rows = [self.rows[i] for i in keep]
        if not self.rows:
            self.batch = None
        for row in ended:
            row.job.live -= 1
            if not row.job.over and row.job.live == 0 and not row.job.waiting:
                self.metrics.request_seconds.labels(row.job.target.metric_label).observe(
                    time.monotonic() - row.job.created
                )
                self._end(row.job)

    def _drop_stopped(self) -> None:
        """End the jobs whose client left or whose time ran out, whatever their stage."""
        now = time.monotonic()
        with self.lock:
            jobs = list(self.jobs)
        for job in jobs:
            if job.cancelled:
                self.metrics.stopped_rows.labels("cancelled").inc(job.live + len(job.waiting))
                self._end(job, Failure(ClientClosed("the client closed the connection before its answer")))
            elif now > job.deadline:
                self.metrics.stopped_rows.labels("timeout").inc(job.live + len(job.waiting))
                self._end(
                    job,
                    Failure(
                        RequestTimeout(
                            f"the request took longer than the server's timeout of {self.timeout:g} s; its "
                            "generation was stopped"
                        )
                    ),
                )
        self._retire()

    def _end(self, job: Job, failure: Failure | None = None) -> None:
        """A job is over: out of the queue, its adapter given back, its request told if it failed. Its rows
        still in the batch leave it at the next _retire."""
        if job.over:
            return
        job.over = True
        with self.lock:
            self.jobs.discard(job)
            if job.waiting and job in self.waiting:
                self.waiting.remove(job)
            job.waiting.clear()
            self._count_queue()
        if job.peft_name is not None:
            self._quietly(self.registry.release, job.peft_name)
            job.peft_name = None
        if failure is not None:
            job.send(failure)

    def _fail_running(self, error: ServingError) -> None:
        """A decoding step (or joining new rows to the batch) failed: the jobs with rows admitted fail, those
        whose rows are all still queued go on."""
        with self.lock:
            admitted = {job for job in self.jobs if job.live}
        for job in {r.job for r in self.rows} | admitted:
            self._end(job, Failure(error))
        self.rows, self.batch = [], None

    def _fail_all(self, error: ServingError, dead: bool = False) -> None:
        with self.lock:
            if dead:
                self.failure = error.message  # from now on submit() refuses at once
            jobs = list(self.jobs)
        for job in jobs:
            self._end(job, Failure(error))
        self.rows, self.batch = [], None

    def _count_queue(self) -> None:
        """Called with the lock held."""
        self.queued_rows = sum(len(job.waiting) for job in self.waiting)
        self.metrics.queue_rows.set(self.queued_rows)

    @staticmethod
    def _quietly(action, *args) -> None:
        try:
            action(*args)
        except Exception:  # unloading an adapter must not stop the worker
            log.exception("%s failed", getattr(action, "__name__", action))


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _eos_ids(model, tokenizer) -> set[int]:
    """The tokens that end a row: the model's generation config's, as `generate` uses them."""
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids = configured if isinstance(configured, list) else [configured]
    return {i for i in ids if i is not None} or {tokenizer.eos_token_id}
