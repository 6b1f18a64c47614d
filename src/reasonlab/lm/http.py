"""``HTTPLM``: the model interface over any OpenAI-compatible endpoint (vLLM, SGLang, Ollama,
``reasonlab serve``), built on the official ``openai`` client.

- ``generate`` calls ``/v1/completions``; ``chat`` calls ``/v1/chat/completions`` (the server
  applies its chat template); ``score`` uses ``echo`` + ``logprobs`` on ``/v1/completions``, the
  way lm-evaluation-harness scores against vLLM, and fails with :class:`ScoringUnsupported` where
  a server does not return echoed prompt log-probabilities.
- Identical prompts in one call become one request with ``n`` samples (at most ``max_n`` each);
  requests run ``max_concurrency`` at a time.
- Timeouts, connection errors, 408, 429 and 5xx are retried with exponential backoff and full
  jitter, waiting at least a ``Retry-After`` the server sends (the AWS "exponential backoff and
  jitter" scheme; the ``openai`` client's own retries are turned off so these are counted).
- Every answer goes into a :class:`~reasonlab.lm.request_cache.RequestCache` as it arrives; a
  rerun of the same requests makes none. Sampled requests with a seed are keyed by that seed;
  without one, the i-th identical request of a process is keyed by i.

Token ids of generations come from the ``return_token_ids`` extension (vLLM and
``reasonlab serve`` honour it); set ``return_token_ids: false`` for servers that reject unknown
fields. Log-probabilities are the server's (vLLM: of the sampling distribution's logits).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Callable, Sequence

from reasonlab.config import ConfigError, check_range
from reasonlab.lm.base import (Generation, LanguageModel, Message, ScoredContinuation,
                               check_sampling_args)
from reasonlab.lm.request_cache import RequestCache, request_key

log = logging.getLogger(__name__)

DEFAULT_CACHE = "~/.cache/reasonlab/requests.sqlite"
_COMPLETION_ARGS = {"model", "prompt", "best_of", "echo", "frequency_penalty", "logit_bias",
                    "logprobs", "max_tokens", "n", "presence_penalty", "seed", "stop", "stream",
                    "suffix", "temperature", "top_p", "user"}
_CHAT_ARGS = {"model", "messages", "max_tokens", "temperature", "top_p", "n", "stop", "seed",
              "logprobs", "top_logprobs", "stream", "user"}


class ScoringUnsupported(NotImplementedError):
    """The server cannot score a continuation (no echoed prompt log-probabilities)."""


@dataclass
class HTTPConfig:
    """Where the endpoint is and how to talk to it."""

    base_url: str = ""  # e.g. http://127.0.0.1:8000/v1; "" = $OPENAI_BASE_URL
    model: str = ""  # served model name; "" = the first one /v1/models lists
    api_key: str | None = None  # None = $OPENAI_API_KEY, else "EMPTY" (local servers)
    max_concurrency: int = 8  # requests in flight at once
    timeout_s: float = 120.0  # per request
    max_retries: int = 8
    backoff_s: float = 0.5  # first retry waits up to this long (full jitter), doubling
    max_backoff_s: float = 20.0
    cache: str | None = "auto"  # SQLite file; "auto" = $REASONLAB_REQUEST_CACHE or DEFAULT_CACHE
    logprobs: bool = True  # ask for the sampled tokens' log-probabilities
    return_token_ids: bool = True  # ask for token ids (vLLM / reasonlab serve extension)
    max_n: int = 16  # samples per request
    tokenizer: str | None = None  # local tokenizer folder, for apply_chat_template

    def __post_init__(self) -> None:
        self.base_url = self.base_url or os.environ.get("OPENAI_BASE_URL", "")
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"config key 'base_url' = {self.base_url!r} must be an http(s) URL "
                              "such as http://127.0.0.1:8000/v1 (or set OPENAI_BASE_URL)")
        check_range("max_concurrency", self.max_concurrency, 1, 1024)
        check_range("timeout_s", self.timeout_s, 0.0, 86400.0, lo_open=True)
        check_range("max_retries", self.max_retries, 0, 100)
        check_range("backoff_s", self.backoff_s, 0.0, 600.0)
        check_range("max_backoff_s", self.max_backoff_s, 0.0, 3600.0)
        check_range("max_n", self.max_n, 1, 1024)

    def cache_path(self) -> str | None:
        if not self.cache:
            return None
        if self.cache == "auto":
            return str(Path(os.environ.get("REASONLAB_REQUEST_CACHE", DEFAULT_CACHE)).expanduser())
        return self.cache if self.cache == ":memory:" else str(Path(self.cache).expanduser())


def retry_after_s(headers: Any) -> float | None:
    """Seconds a ``Retry-After`` (or ``retry-after-ms``) header asks for; None if absent."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None,
                  rng: random.Random) -> float:
    """Full-jitter exponential backoff: uniform(0, min(cap, base * 2**attempt)), and never less
    than what the server asked for in ``Retry-After``."""
    delay = rng.uniform(0.0, min(cap, base * (2 ** attempt)))
    return max(delay, retry_after) if retry_after is not None else delay


def _retryable(err: Exception) -> tuple[bool, float | None]:
    import openai

    if isinstance(err, openai.APIConnectionError):  # includes timeouts
        return True, None
    if isinstance(err, openai.APIStatusError):
        code = err.status_code
        if code in (408, 429) or code >= 500:
            return True, retry_after_s(err.response.headers if err.response is not None else None)
    return False, None


def completion_generation(choice: dict[str, Any]) -> Generation:
    """A :class:`Generation` from one ``/v1/completions`` choice (``echo`` off)."""
    lp = choice.get("logprobs") or {}
    return Generation(text=choice.get("text") or "",
                      token_ids=[int(t) for t in choice.get("token_ids") or []],
                      logprobs=[float(x) for x in lp.get("token_logprobs") or [] if x is not None],
                      finish_reason="stop" if choice.get("finish_reason") == "stop" else "length",
                      stop_reason=choice.get("stop_reason"))


def chat_generation(choice: dict[str, Any]) -> Generation:
    """A :class:`Generation` from one ``/v1/chat/completions`` choice."""
    content = ((choice.get("logprobs") or {}).get("content")) or []
    return Generation(text=(choice.get("message") or {}).get("content") or "",
                      token_ids=[int(t) for t in choice.get("token_ids") or []],
                      logprobs=[float(c["logprob"]) for c in content],
                      finish_reason="stop" if choice.get("finish_reason") == "stop" else "length",
                      stop_reason=choice.get("stop_reason"))


def echo_scored(choice: dict[str, Any], continuation: str, generated: int) -> ScoredContinuation:
    """The continuation's tokens from an ``echo`` + ``logprobs`` choice whose prompt was
    prompt + continuation and which generated ``generated`` tokens after it.

    Offsets are counted from the end: the first generated token starts where the echoed text
    ends, so a server that counts a BOS token's text in its offsets (vLLM) and one that does
    not give the same split. A token that straddles the prompt/continuation boundary counts
    as continuation (as in :class:`~reasonlab.lm.local.LocalLM`)."""
    lp = choice.get("logprobs") or {}
    tokens, offsets, values = lp.get("tokens"), lp.get("text_offset"), lp.get("token_logprobs")
    if not tokens or offsets is None or values is None:
        raise ScoringUnsupported("the server returned no echoed prompt log-probabilities; "
                                 "score() needs echo + logprobs on /v1/completions (vLLM and "
                                 "reasonlab serve have them)")
    m = len(tokens) - generated
    if m <= 0 or len(offsets) < len(tokens):
        raise ScoringUnsupported("the server's echo answer has no prompt tokens to score")
    total = offsets[m] if m < len(offsets) else offsets[m - 1] + len(tokens[m - 1])
    boundary = total - len(continuation)
    ends = [offsets[i + 1] for i in range(m - 1)] + [total]
    first = next((i for i in range(m) if ends[i] > boundary), m)
    if first == 0:
        raise ValueError("the prompt must encode to at least one token to score a continuation")
    if any(v is None for v in values[first:m]):
        raise ScoringUnsupported("the server returned no log-probability for a continuation token")
    vals = [float(v) for v in values[first:m]]
    ids = choice.get("prompt_token_ids") or []
    return ScoredContinuation([int(t) for t in ids[first:m]] if len(ids) == m else [], vals,
                              [True] * len(vals))


class HTTPLM(LanguageModel):
    """A model behind an OpenAI-compatible endpoint. ``counters``: ``requests`` (HTTP attempts,
    retries included), ``retries``, ``cache_hits``."""

    def __init__(self, cfg: HTTPConfig | None = None, **kwargs: Any):
        import openai

        self.cfg = cfg if cfg is not None else HTTPConfig(**kwargs)
        key = self.cfg.api_key if self.cfg.api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.client = openai.OpenAI(base_url=self.cfg.base_url, api_key=key or "EMPTY",
                                    timeout=self.cfg.timeout_s, max_retries=0)
        path = self.cfg.cache_path()
        self.cache = RequestCache(path) if path else None
        self._model = self.cfg.model
        self._pool = ThreadPoolExecutor(max_workers=self.cfg.max_concurrency,
                                        thread_name_prefix="httplm")
        self._lock = threading.Lock()
        self._repeats: dict[str, int] = {}
        self._rng = random.Random()
        self._tokenizer = None
        self.counters = {"requests": 0, "retries": 0, "cache_hits": 0}

    @property
    def model_name(self) -> str:
        """The served model name (asked from ``/v1/models`` once when not configured)."""
        if not self._model:
            models = self._with_retries(lambda: self.client.models.list().data)
            if not models:
                raise ValueError(f"the server at {self.cfg.base_url} lists no models")
            self._model = models[0].id
        return self._model

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.client.close()
        if self.cache is not None:
            self.cache.close()

    def reset_counters(self) -> dict[str, int]:
        old = dict(self.counters)
        self.counters = {k: 0 for k in self.counters}
        return old

    # ------------------------------------------------------------------ requests
    def _with_retries(self, fn: Callable[[], Any]) -> Any:
        for attempt in range(self.cfg.max_retries + 1):
            with self._lock:
                self.counters["requests"] += 1
            try:
                return fn()
            except Exception as e:  # noqa: BLE001 - sorted by _retryable
                again, wait = _retryable(e)
                if not again or attempt == self.cfg.max_retries:
                    raise
                delay = backoff_delay(attempt, self.cfg.backoff_s, self.cfg.max_backoff_s, wait,
                                      self._rng)
                with self._lock:
                    self.counters["retries"] += 1
                log.warning("request failed (%s); retry %d of %d in %.2fs", type(e).__name__,
                            attempt + 1, self.cfg.max_retries, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        known = _COMPLETION_ARGS if kind == "completions" else _CHAT_ARGS
        args = {k: v for k, v in body.items() if k in known}
        extra = {k: v for k, v in body.items() if k not in known}
        create = self.client.completions.create if kind == "completions" \
            else self.client.chat.completions.create
        return self._with_retries(lambda: create(**args, extra_body=extra or None).model_dump())

    def _key(self, kind: str, body: dict[str, Any]) -> str:
        """The cache key; unseeded sampled requests take the next repeat index."""
        repeat = 0
        if body.get("temperature", 1.0) > 0 and body.get("seed") is None:
            base = request_key(self.cfg.base_url, body["model"], kind, body)
            with self._lock:
                repeat = self._repeats.get(base, 0)
                self._repeats[base] = repeat + 1
        return request_key(self.cfg.base_url, body["model"], kind, body, repeat)

    def _request(self, kind: str, body: dict[str, Any], key: str) -> dict[str, Any]:
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                with self._lock:
                    self.counters["cache_hits"] += 1
                return hit
        resp = self._send(kind, body)
        if self.cache is not None:
            self.cache.put(key, self.cfg.base_url, body["model"], {"kind": kind, **body}, resp)
        return resp

    def _run(self, kind: str, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        keys = [self._key(kind, b) for b in bodies]  # in order, so repeats are deterministic
        futures = [self._pool.submit(self._request, kind, b, k) for b, k in zip(bodies, keys)]
        return [f.result() for f in futures]

    # ------------------------------------------------------------------ generation
    def _sampled(self, kind: str, inputs: Sequence[Any], field_name: str, *, max_new_tokens: int,
                 temperature: float, top_p: float, stop: Sequence[str] | None,
                 seed: int | None, parse: Callable[[dict[str, Any]], Generation]) -> list[Generation]:
        """Group identical inputs into requests with ``n`` samples; one Generation per input."""
        import json

        check_sampling_args(max_new_tokens, temperature, top_p)
        rows: dict[str, list[int]] = {}
        for i, x in enumerate(inputs):
            rows.setdefault(json.dumps(x, sort_keys=True), []).append(i)
        bodies, owners = [], []
        for key, idx in rows.items():
            chunks = [idx] if temperature == 0 else \
                [idx[j:j + self.cfg.max_n] for j in range(0, len(idx), self.cfg.max_n)]
            for j, chunk in enumerate(chunks):
                body: dict[str, Any] = {"model": self.model_name, field_name: json.loads(key),
                                        "max_tokens": max_new_tokens, "temperature": temperature,
                                        "top_p": top_p, "n": 1 if temperature == 0 else len(chunk)}
                if stop:
                    body["stop"] = [s for s in stop if s]
                if seed is not None and temperature > 0:
                    body["seed"] = int(seed) + j
                if self.cfg.logprobs:
                    body["logprobs"] = 1 if kind == "completions" else True
                if self.cfg.return_token_ids:
                    body["return_token_ids"] = True
                bodies.append(body)
                owners.append(chunk)
        out: list[Generation | None] = [None] * len(inputs)
        for body, chunk, resp in zip(bodies, owners, self._run(kind, bodies)):
            choices = sorted(resp["choices"], key=lambda c: c.get("index", 0))
            gens = [parse(c) for c in choices]
            if len(gens) < body["n"]:
                raise RuntimeError(f"the server returned {len(gens)} choices for n={body['n']}")
            for r, i in enumerate(chunk):
                out[i] = gens[0] if temperature == 0 else gens[r]
        return out  # type: ignore[return-value]

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int = 128,
                 temperature: float = 0.0, top_p: float = 1.0,
                 stop: Sequence[str] | None = None, seed: int | None = None) -> list[Generation]:
        """One continuation per prompt through ``/v1/completions`` (see the module docstring)."""
        if isinstance(prompts, str):
            raise TypeError("prompts must be a sequence of strings, not a string")
        return self._sampled("completions", list(prompts), "prompt", max_new_tokens=max_new_tokens,
                             temperature=temperature, top_p=top_p, stop=stop, seed=seed,
                             parse=completion_generation)

    def chat(self, conversations: Sequence[Sequence[Message]], *, max_new_tokens: int = 128,
             temperature: float = 0.0, top_p: float = 1.0, stop: Sequence[str] | None = None,
             seed: int | None = None) -> list[Generation]:
        """The assistant's reply to each conversation through ``/v1/chat/completions``."""
        convs = [[{"role": m["role"], "content": m["content"]} for m in c] for c in conversations]
        return self._sampled("chat", convs, "messages", max_new_tokens=max_new_tokens,
                             temperature=temperature, top_p=top_p, stop=stop, seed=seed,
                             parse=chat_generation)

    # ------------------------------------------------------------------ scoring
    def score(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[ScoredContinuation]:
        """Teacher-forced log-probabilities via ``echo`` + ``logprobs`` (one token generated
        after the echo and ignored)."""
        import openai

        if len(prompts) != len(continuations):
            raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
        bodies = []
        for p, c in zip(prompts, continuations):
            body = {"model": self.model_name, "prompt": p + c, "max_tokens": 1, "temperature": 0.0,
                    "echo": True, "logprobs": 1}
            if self.cfg.return_token_ids:
                body["return_token_ids"] = True
            bodies.append(body)
        try:
            resps = self._run("completions", bodies)
        except openai.BadRequestError as e:
            raise ScoringUnsupported(f"the server at {self.cfg.base_url} refused an echo + "
                                     f"logprobs request, so it cannot score: {e.message}") from None
        out = []
        for c, resp in zip(continuations, resps):
            gen = int((resp.get("usage") or {}).get("completion_tokens") or 1)
            out.append(echo_scored(resp["choices"][0], c, gen))
        return out

    # ------------------------------------------------------------------ chat template
    def apply_chat_template(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        """Render with the local tokenizer named by ``tokenizer`` (the server's template is not
        visible over the API; :meth:`chat` sends messages and lets the server render them)."""
        if not self.cfg.tokenizer:
            raise ValueError("an HTTP model renders chats on the server: use chat(), or set the "
                             "config key 'tokenizer' to a local tokenizer folder with the template")
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.cfg.tokenizer, local_files_only=True)
        if not getattr(self._tokenizer, "chat_template", None):
            raise ValueError(f"the tokenizer in {self.cfg.tokenizer} has no chat template")
        return self._tokenizer.apply_chat_template(list(messages), tokenize=False,
                                                   add_generation_prompt=add_generation_prompt)
