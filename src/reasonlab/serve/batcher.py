"""Dynamic batching: requests that arrive close together share one batched ``generate`` call.

One worker thread owns the model. A request is a :class:`Job` (its prompt rows and sampling
parameters); the worker takes the oldest job, waits up to ``wait_ms`` for more jobs with the
same parameters (or until ``max_batch`` rows are gathered) and runs them as one batch through
:meth:`LocalLM.generate`; jobs with other parameters wait for the next round in arrival order.
Seeded sampled jobs run alone, so a seed gives the same samples however busy the server is.
While a batch runs, new requests queue up and form the next batch: throughput grows with the
number of clients instead of each waiting its turn. The wait ends early once as many rows are
gathered as the largest of the last 16 batches had (the clients of the batch that just finished
are usually about to come back), so a lone client never waits and a crowd is not split. This is the scheme of the "dynamic batcher"
of NVIDIA Triton and TorchServe (max batch size + max queue delay), not the iteration-level
("continuous") batching of Orca (Yu et al., OSDI 2022, §3.1) and vLLM (Kwon et al.,
arXiv:2309.06180, §4), which also joins rows mid-generation.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

log = logging.getLogger(__name__)


class Overloaded(RuntimeError):
    """The queue is full; the caller should answer 503 and the client retry later."""


@dataclass
class Job:
    """One request's rows and how to sample them; ``post`` runs in the worker after generation
    (e.g. echo scoring), its value becomes the future's result."""

    prompts: list[str]
    params: dict[str, Any]  # max_new_tokens, temperature, top_p, stop (tuple), seed
    post: Callable[[list[Any]], Any] | None = None
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    key: Any = None

    def __post_init__(self) -> None:
        p = self.params
        seeded = p.get("seed") is not None and p.get("temperature", 0.0) > 0
        self.key = (p.get("max_new_tokens"), p.get("temperature"), p.get("top_p"),
                    tuple(p.get("stop") or ()), next(_unique) if seeded else None)


_unique = itertools.count()


def batch_compatible(jobs: Sequence[Job], max_batch: int) -> list[Job]:
    """The oldest job and, in arrival order, the later jobs with its key while the rows fit in
    ``max_batch`` (the oldest is always taken, even when it alone has more rows)."""
    if not jobs:
        return []
    first = jobs[0]
    taken, rows = [first], len(first.prompts)
    for j in jobs[1:]:
        if j.key == first.key and rows + len(j.prompts) <= max_batch:
            taken.append(j)
            rows += len(j.prompts)
    return taken


class DynamicBatcher:
    """Runs :class:`Job` s on ``lm`` from one worker thread, batching compatible ones."""

    def __init__(self, lm, *, max_batch: int = 16, wait_ms: float = 20.0, max_queue: int = 256):
        self.lm = lm
        self.max_batch = int(max_batch)
        self.wait_s = float(wait_ms) / 1000.0
        self.max_queue = int(max_queue)
        self._queue: collections.deque[Job] = collections.deque()
        self._cv = threading.Condition()
        self._stop = False
        self._recent: collections.deque[int] = collections.deque(maxlen=16)
        self.stats = {"batches": 0, "rows": 0, "jobs": 0, "max_rows": 0}
        self._thread = threading.Thread(target=self._loop, name="batcher", daemon=True)
        self._thread.start()

    @property
    def queued_rows(self) -> int:
        with self._cv:
            return sum(len(j.prompts) for j in self._queue)

    def submit(self, prompts: list[str], params: dict[str, Any],
               post: Callable[[list[Any]], Any] | None = None) -> concurrent.futures.Future:
        """Queue one request; raises :class:`Overloaded` when ``max_queue`` rows already wait."""
        job = Job(list(prompts), dict(params), post)
        with self._cv:
            if self._stop:
                raise Overloaded("the server is shutting down")
            waiting = sum(len(j.prompts) for j in self._queue)
            if self._queue and waiting + len(job.prompts) > self.max_queue:
                raise Overloaded(f"the server is overloaded ({waiting} rows queued, at most "
                                 f"{self.max_queue}); retry later")
            self._queue.append(job)
            self._cv.notify_all()
        return job.future

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._thread.join(timeout=30)
        for job in list(self._queue):
            job.future.set_exception(Overloaded("the server shut down"))
        self._queue.clear()

    def _take(self) -> list[Job]:
        with self._cv:
            while not self._queue and not self._stop:
                self._cv.wait()
            if self._stop:
                return []
            deadline = time.monotonic() + self.wait_s
            target = min(self.max_batch, max(self._recent, default=self.max_batch))
            while True:
                batch = batch_compatible(list(self._queue), self.max_batch)
                left = deadline - time.monotonic()
                if sum(len(j.prompts) for j in batch) >= target or left <= 0 or self._stop:
                    break
                self._cv.wait(left)
            for j in batch:
                self._queue.remove(j)
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if not batch:
                return
            rows = [p for j in batch for p in j.prompts]
            self.stats["batches"] += 1
            self.stats["rows"] += len(rows)
            self.stats["jobs"] += len(batch)
            self.stats["max_rows"] = max(self.stats["max_rows"], len(rows))
            self._recent.append(len(rows))
            p = batch[0].params
            try:
                gens = self.lm.generate(rows, max_new_tokens=p["max_new_tokens"],
                                        temperature=p["temperature"], top_p=p["top_p"],
                                        stop=list(p.get("stop") or ()) or None, seed=p.get("seed"))
            except Exception as e:  # noqa: BLE001 - handed to every waiting request
                log.exception("batch of %d rows failed", len(rows))
                for j in batch:
                    j.future.set_exception(e)
                continue
            start = 0
            for j in batch:
                mine = gens[start:start + len(j.prompts)]
                start += len(j.prompts)
                try:
                    j.future.set_result(j.post(mine) if j.post is not None else mine)
                except Exception as e:  # noqa: BLE001
                    j.future.set_exception(e)
