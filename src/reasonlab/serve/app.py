"""``reasonlab serve``: an OpenAI-compatible HTTP server over a local model (FastAPI + uvicorn).

Routes: ``GET /health``, ``GET /v1/models``, ``POST /v1/completions`` (``logprobs``, ``echo``,
``n``, ``stop``, ``seed``, streaming), ``POST /v1/chat/completions`` (the model's chat template,
``logprobs``/``top_logprobs``, streaming). Requests go through a
:class:`~reasonlab.serve.batcher.DynamicBatcher`, so concurrent clients share batched generation.

The wire format follows OpenAI's API reference (completions, chat completions, the error object
``{"error": {"message", "type", "param", "code"}}``) and vLLM's OpenAI-compatible server for the
extensions (``return_token_ids`` → ``token_ids``/``prompt_token_ids``, ``stop_reason``).
Streaming sends server-sent events (``data: {...}`` chunks, then ``data: [DONE]``); the chunks
are cut from the finished generation (one per token), since the batched decoding loop does not
hand out tokens as it goes.

Errors: 400 for a malformed body, a bad field (the message and ``param`` name it) or a prompt
longer than the context; 401 for a missing or wrong Bearer key; 404 for an unknown model or
route; 413 for a body over ``max_body_bytes``; 503 (with ``Retry-After``) when the queue is full.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reasonlab.config import ConfigError, check_range
from reasonlab.serve.batcher import DynamicBatcher, Overloaded

log = logging.getLogger(__name__)


@dataclass
class ServeConfig:
    """How the server runs and what it accepts."""

    model: str = ""  # a model folder (or a name the model loader knows)
    name: str = ""  # the served model name; "" = the folder's name
    host: str = "127.0.0.1"  # loopback unless told otherwise
    port: int = 8000
    api_key: str | None = None  # None = $REASONLAB_API_KEY if set, else no key required
    max_batch: int = 16  # rows per batched generate call (1 = one request at a time)
    batch_wait_ms: float = 20.0  # longest wait of a batch's first request for company
    max_queue: int = 256  # queued rows before new requests get 503
    max_body_bytes: int = 1 << 20
    max_tokens_limit: int = 1024  # the largest max_tokens a request may ask for
    max_n: int = 16
    max_context: int = 0  # prompt + max_tokens; 0 = the model's max_position_embeddings
    device: str = "cpu"
    threads: int = 1  # torch CPU threads (0 = leave as is)

    def __post_init__(self) -> None:
        check_range("port", self.port, 0, 65535)
        check_range("max_batch", self.max_batch, 1, 4096)
        check_range("batch_wait_ms", self.batch_wait_ms, 0.0, 10_000.0)
        check_range("max_queue", self.max_queue, 1, 1 << 20)
        check_range("max_body_bytes", self.max_body_bytes, 64, 1 << 30)
        check_range("max_tokens_limit", self.max_tokens_limit, 1, 1 << 20)
        check_range("max_n", self.max_n, 1, 1024)
        check_range("max_context", self.max_context, 0, 1 << 24)
        check_range("threads", self.threads, 0, 1024)
        if not self.host:
            raise ConfigError("config key 'host' must not be empty (127.0.0.1 for loopback)")


# ---------------------------------------------------------------------------- request schemas
class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    return_token_ids: bool = False


class CompletionRequest(_Request):
    prompt: str | list[str]
    max_tokens: int = Field(16, ge=0)
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str


class ChatRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=0)
    max_completion_tokens: int | None = Field(None, ge=0)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)


class ApiError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 kind: str = "invalid_request_error", code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param
        self.kind, self.code, self.headers = kind, code, headers

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": self.code}}


def validation_error(e: ValidationError) -> ApiError:
    """The first pydantic error as a 400 naming its field (``messages.0.content``)."""
    err = e.errors()[0]
    loc = [str(x) for x in err.get("loc", ()) if not str(x).startswith(("function-", "str", "list["))]
    param = ".".join(loc) or None
    msg = err.get("msg", "invalid value")
    if err.get("type") == "missing":
        msg = "is required"
    return ApiError(400, f"{param}: {msg}" if param else msg, param)


def parse_body(raw: bytes, schema: type[BaseModel]) -> Any:
    """JSON bytes -> a validated request; a malformed, truncated or non-object body is a 400."""
    try:
        data = json.loads(raw)
    except UnicodeDecodeError:
        raise ApiError(400, "malformed JSON body: not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise ApiError(400, f"malformed JSON body: {e.msg} at line {e.lineno} column {e.colno}"
                       " (truncated or invalid JSON)") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {type(data).__name__}")
    try:
        return schema.model_validate(data)
    except ValidationError as e:
        raise validation_error(e) from None


# ---------------------------------------------------------------------------- model-side helpers
def token_offsets(lm, text: str, ids: list[int]) -> list[int]:
    """Start offset in ``text`` of each token of ``ids`` (= ``lm.encode(text)``), contiguous:
    a token starts where the one before it ends; an added BOS covers no characters."""
    ends: list[int] | None = None
    tok = lm.tokenizer
    if getattr(tok, "is_fast", False):
        bos = tok.bos_token
        enc = tok(text, add_special_tokens=not (bos and text.startswith(bos)),
                  return_offsets_mapping=True)
        if list(enc["input_ids"]) == list(ids):
            ends = [int(e) for _, e in enc["offset_mapping"]]
    if ends is None:  # decode prefixes (slow, exact for any tokenizer that round-trips)
        skip = 1 if ids and tok.bos_token_id == ids[0] and not text.startswith(tok.bos_token or "\0") else 0
        ends = [0] * skip + [len(lm.decode(ids[skip:i + 1])) for i in range(skip, len(ids))]
    starts, prev = [], 0
    for e in ends:
        starts.append(prev)
        prev = max(prev, e)
    return starts


def teacher_forced(lm, ids: list[int], top: int) -> tuple[list[float], list[list[tuple[int, float]]]]:
    """``log p(ids[t] | ids[:t])`` for t >= 1 and the ``top`` most likely tokens at each t."""
    import torch

    with torch.inference_mode():
        x = torch.tensor([ids], device=lm.device)
        logits = lm.model(input_ids=x).logits[0, :-1].float()
        lsm = torch.log_softmax(logits, dim=-1)
        picked = lsm.gather(1, x[0, 1:, None])[:, 0].tolist()
        tops: list[list[tuple[int, float]]] = [[] for _ in picked]
        if top > 0:
            vals, idx = lsm.topk(min(top, lsm.shape[-1]), dim=-1)
            tops = [list(zip(i, v)) for i, v in zip(idx.tolist(), vals.tolist())]
    return picked, tops


def text_pieces(lm, token_ids: list[int], text: str) -> list[str]:
    """``text`` cut into one piece per token (for streaming); the pieces join to ``text``."""
    pieces, prev = [], 0
    for k in range(len(token_ids)):
        cur = min(len(lm.decode(token_ids[:k + 1])), len(text))
        if cur > prev:
            pieces.append(text[prev:cur])
            prev = cur
    if prev < len(text):
        pieces.append(text[prev:])
    return pieces


# ---------------------------------------------------------------------------- the app
class Server:
    """The model, its batcher and the request handling; :meth:`app` builds the FastAPI app."""

    def __init__(self, lm, cfg: ServeConfig):
        self.lm = lm
        self.cfg = cfg
        self.name = cfg.name or (os.path.basename(os.path.normpath(cfg.model)) if cfg.model else "model")
        self.api_key = cfg.api_key if cfg.api_key is not None else os.environ.get("REASONLAB_API_KEY")
        self.context = cfg.max_context or int(getattr(lm.model.config, "max_position_embeddings", 0)
                                              or 1 << 20)
        self.batcher = DynamicBatcher(lm, max_batch=cfg.max_batch, wait_ms=cfg.batch_wait_ms,
                                      max_queue=cfg.max_queue)
        self.created = int(time.time())
        self.requests = 0

    # -------------------------------------------------------------- checks
    def check_auth(self, header: str | None) -> None:
        if not self.api_key:
            return
        given = (header or "").removeprefix("Bearer ").strip() if (header or "").startswith("Bearer ") else ""
        if not given or not hmac.compare_digest(given.encode(), self.api_key.encode()):
            raise ApiError(401, "Incorrect or missing API key in the Authorization header "
                                "(expected 'Authorization: Bearer KEY')", "authorization",
                           code="invalid_api_key")

    def check_common(self, req: Any, max_tokens: int) -> None:
        if req.model != self.name:
            raise ApiError(404, f"model: the model '{req.model}' does not exist; this server "
                                f"serves '{self.name}'", "model", code="model_not_found")
        if max_tokens > self.cfg.max_tokens_limit:
            raise ApiError(400, f"max_tokens: {max_tokens} is over this server's limit of "
                                f"{self.cfg.max_tokens_limit}", "max_tokens")
        if req.n > self.cfg.max_n:
            raise ApiError(400, f"n: {req.n} is over this server's limit of {self.cfg.max_n}", "n")
        stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        if len(stops) > 16:
            raise ApiError(400, f"stop: at most 16 stop strings, got {len(stops)}", "stop")

    def encode_prompt(self, prompt: str, max_tokens: int, param: str = "prompt") -> list[int]:
        ids = self.lm.encode(prompt)
        if not ids:
            raise ApiError(400, f"{param}: the prompt encodes to no tokens", param)
        if len(ids) + max_tokens > self.context:
            raise ApiError(400, f"{param}: the prompt has {len(ids)} tokens and max_tokens is "
                                f"{max_tokens}, over the model's context of {self.context} tokens",
                           param)
        return ids

    @staticmethod
    def sampling(req: Any, max_tokens: int) -> dict[str, Any]:
        stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        return {"max_new_tokens": max_tokens, "temperature": req.temperature, "top_p": req.top_p,
                "stop": tuple(s for s in stops if s), "seed": req.seed}

    async def run(self, prompts: list[str], params: dict[str, Any], post=None) -> Any:
        try:
            fut = self.batcher.submit(prompts, params, post)
        except Overloaded as e:
            raise ApiError(503, str(e), kind="server_error", code="overloaded",
                           headers={"Retry-After": "1"}) from None
        try:
            return await asyncio.wrap_future(fut)
        except Overloaded as e:
            raise ApiError(503, str(e), kind="server_error", code="overloaded",
                           headers={"Retry-After": "1"}) from None
        except ValueError as e:
            raise ApiError(400, str(e)) from None

    # -------------------------------------------------------------- completions
    def _completion_logprobs(self, prompt: str, p_ids: list[int], g, k: int, echo: bool,
                             prompt_lps: list[float] | None, tops: list | None) -> dict[str, Any]:
        dec = self.lm.decode
        tokens, lps, offsets, top = [], [], [], []
        if echo:
            tokens += [dec([t]) for t in p_ids]
            lps += [None] + list(prompt_lps or [])
            offsets += token_offsets(self.lm, prompt, p_ids)
        pos = len(prompt) if echo else 0
        for t in g.token_ids:
            piece = dec([t])
            tokens.append(piece)
            offsets.append(pos)
            pos += len(piece)
        lps += [float(x) for x in g.logprobs]
        if k > 0 and tops is not None:
            top = [None if row is None else {dec([i]): v for i, v in row} for row in tops]
        return {"tokens": tokens, "token_logprobs": lps, "text_offset": offsets,
                "top_logprobs": top if k > 0 else None}

    async def completions(self, req: CompletionRequest) -> dict[str, Any] | list[dict[str, Any]]:
        self.check_common(req, req.max_tokens)
        prompts = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
        if not prompts:
            raise ApiError(400, "prompt: must not be an empty list", "prompt")
        if req.echo and req.stream:
            raise ApiError(400, "echo: not supported with stream", "echo")
        ids = [self.encode_prompt(p, req.max_tokens, "prompt") for p in prompts]
        k = req.logprobs or 0
        need_tf = req.logprobs is not None and (req.echo or k > 0)
        rows = [p for p in prompts for _ in range(req.n)]
        row_ids = [i for i in ids for _ in range(req.n)]

        def post(gens):  # runs in the model's thread: prompt log-probs and top-k by teacher forcing
            extra = []
            for p_ids, g in zip(row_ids, gens):
                if not need_tf:
                    extra.append((None, None))
                    continue
                lps, tops = teacher_forced(self.lm, p_ids + list(g.token_ids), k)
                n_p = len(p_ids)
                prompt_lps = lps[:n_p - 1]
                gen_tops = tops[n_p - 1:n_p - 1 + len(g.token_ids)]
                all_tops = ([None] + tops[:n_p - 1] if req.echo else []) + gen_tops
                extra.append((prompt_lps, all_tops))
            return gens, extra

        gens, extra = await self.run(rows, self.sampling(req, req.max_tokens), post)
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        choices = []
        for i, (g, (prompt_lps, tops)) in enumerate(zip(gens, extra)):
            prompt, p_ids = rows[i], row_ids[i]
            c: dict[str, Any] = {"index": i, "text": (prompt if req.echo else "") + g.text,
                                 "finish_reason": g.finish_reason, "stop_reason": g.stop_reason,
                                 "logprobs": None}
            if req.logprobs is not None:
                c["logprobs"] = self._completion_logprobs(prompt, p_ids, g, k, req.echo,
                                                          prompt_lps, tops)
            if req.return_token_ids:
                c["token_ids"] = list(g.token_ids)
                c["prompt_token_ids"] = list(p_ids)
            choices.append(c)
        usage = {"prompt_tokens": sum(len(x) for x in ids),
                 "completion_tokens": sum(len(g.token_ids) for g in gens)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if req.stream:
            return [self._completion_chunk(rid, created, c["index"], piece, None)
                    for c, g in zip(choices, gens)
                    for piece in text_pieces(self.lm, list(g.token_ids), g.text)] + \
                   [self._completion_chunk(rid, created, c["index"], "", c["finish_reason"])
                    for c in choices]
        return {"id": rid, "object": "text_completion", "created": created, "model": self.name,
                "choices": choices, "usage": usage}

    def _completion_chunk(self, rid, created, index, text, finish) -> dict[str, Any]:
        return {"id": rid, "object": "text_completion", "created": created, "model": self.name,
                "choices": [{"index": index, "text": text, "logprobs": None,
                             "finish_reason": finish}]}

    # -------------------------------------------------------------- chat
    async def chat(self, req: ChatRequest) -> dict[str, Any] | list[dict[str, Any]]:
        max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None \
            else (req.max_tokens if req.max_tokens is not None else 256)
        self.check_common(req, max_tokens)
        try:
            prompt = self.lm.apply_chat_template([m.model_dump() for m in req.messages])
        except ValueError as e:
            raise ApiError(400, f"messages: {e}", "messages") from None
        p_ids = self.encode_prompt(prompt, max_tokens, "messages")
        k = req.top_logprobs or 0

        def post(gens):
            if not req.logprobs or k == 0:
                return gens, [None] * len(gens)
            tops = []
            for g in gens:
                _, t = teacher_forced(self.lm, p_ids + list(g.token_ids), k)
                tops.append(t[len(p_ids) - 1:])
            return gens, tops

        gens, tops = await self.run([prompt] * req.n, self.sampling(req, max_tokens), post)
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        dec = self.lm.decode

        def entry(t: int, lp: float) -> dict[str, Any]:
            s = dec([t])
            return {"token": s, "logprob": lp, "bytes": list(s.encode("utf-8"))}

        choices = []
        for i, (g, top) in enumerate(zip(gens, tops)):
            c: dict[str, Any] = {"index": i, "message": {"role": "assistant", "content": g.text},
                                 "finish_reason": g.finish_reason, "stop_reason": g.stop_reason,
                                 "logprobs": None}
            if req.logprobs:
                content = []
                for j, (t, lp) in enumerate(zip(g.token_ids, g.logprobs)):
                    e = entry(t, float(lp))
                    e["top_logprobs"] = [entry(a, v) for a, v in top[j]] if top is not None else []
                    content.append(e)
                c["logprobs"] = {"content": content}
            if req.return_token_ids:
                c["token_ids"] = list(g.token_ids)
                c["prompt_token_ids"] = list(p_ids)
            choices.append(c)
        usage = {"prompt_tokens": len(p_ids), "completion_tokens": sum(len(g.token_ids) for g in gens)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if req.stream:
            chunks = []
            for c, g in zip(choices, gens):
                chunks.append(self._chat_chunk(rid, created, c["index"], {"role": "assistant", "content": ""}, None))
                chunks += [self._chat_chunk(rid, created, c["index"], {"content": piece}, None)
                           for piece in text_pieces(self.lm, list(g.token_ids), g.text)]
                chunks.append(self._chat_chunk(rid, created, c["index"], {}, c["finish_reason"]))
            return chunks
        return {"id": rid, "object": "chat.completion", "created": created, "model": self.name,
                "choices": choices, "usage": usage}

    def _chat_chunk(self, rid, created, index, delta, finish) -> dict[str, Any]:
        return {"id": rid, "object": "chat.completion.chunk", "created": created,
                "model": self.name, "choices": [{"index": index, "delta": delta, "logprobs": None,
                                                 "finish_reason": finish}]}

    # -------------------------------------------------------------- FastAPI
    def app(self):
        from fastapi import FastAPI
        from fastapi.responses import JSONResponse, StreamingResponse
        from starlette.exceptions import HTTPException as StarletteHTTPException

        server = self

        @contextlib.asynccontextmanager
        async def lifespan(app):
            yield
            server.batcher.close()

        app = FastAPI(title="reasonlab serve", docs_url=None, redoc_url=None, openapi_url=None,
                      lifespan=lifespan)

        @app.exception_handler(ApiError)
        async def _api_error(request: Request, e: ApiError):
            return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

        @app.exception_handler(StarletteHTTPException)
        async def _http_error(request: Request, e: StarletteHTTPException):
            err = ApiError(e.status_code, f"{request.method} {request.url.path}: {e.detail}",
                           code="not_found" if e.status_code == 404 else None)
            return JSONResponse(err.body(), status_code=e.status_code)

        async def body_of(request: Request) -> bytes:
            limit = server.cfg.max_body_bytes
            length = request.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > limit:
                raise ApiError(413, f"the request body has {length} bytes, over the limit of {limit}")
            chunks, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, f"the request body is over the limit of {limit} bytes")
                chunks.append(chunk)
            return b"".join(chunks)

        def respond(result):
            if isinstance(result, list):  # streamed chunks
                async def events():
                    for chunk in result:
                        yield f"data: {json.dumps(chunk)}\n\n"
                    yield "data: [DONE]\n\n"
                return StreamingResponse(events(), media_type="text/event-stream")
            return result

        @app.get("/health")
        async def health():
            return {"status": "ok", "model": server.name, "queued_rows": server.batcher.queued_rows,
                    "requests": server.requests, **server.batcher.stats}

        @app.get("/v1/models")
        async def models(request: Request):
            server.check_auth(request.headers.get("authorization"))
            return {"object": "list", "data": [{"id": server.name, "object": "model",
                                                "created": server.created, "owned_by": "reasonlab",
                                                "max_model_len": server.context}]}

        @app.post("/v1/completions")
        async def completions(request: Request):
            server.check_auth(request.headers.get("authorization"))
            server.requests += 1
            req = parse_body(await body_of(request), CompletionRequest)
            return respond(await server.completions(req))

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            server.check_auth(request.headers.get("authorization"))
            server.requests += 1
            req = parse_body(await body_of(request), ChatRequest)
            return respond(await server.chat(req))

        return app


def create_app(lm, cfg: ServeConfig | None = None):
    """The FastAPI app serving ``lm`` (a :class:`~reasonlab.lm.local.LocalLM`)."""
    return Server(lm, cfg or ServeConfig()).app()
