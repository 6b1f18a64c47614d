"""A persistent cache of model requests in SQLite, so a rerun repeats no paid call.

One row per request, keyed by a SHA-256 of the endpoint, the model and the full request body
(plus a repeat index for sampled requests without a seed, see :func:`request_key`). Each answer
is committed as it arrives, in WAL mode, so a pipeline killed half-way resumes from the rows
already written and several processes (or threads) can share one file: readers never block the
writer, and a busy writer is waited for, not failed.

The design follows the usual practice of response caches for LLM pipelines (e.g. the SQLite
caches of ``lm-evaluation-harness`` and LangChain's ``SQLiteCache``): content-addressed rows,
the request stored beside the answer so a row can be audited.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    key TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    response TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def request_key(endpoint: str, model: str, kind: str, body: dict[str, Any], repeat: int = 0) -> str:
    """The cache key of one request: SHA-256 of a canonical JSON of everything that changes the
    answer. ``repeat`` tells apart identical sampled requests without a seed (the i-th time a run
    asks the same question gets the i-th stored answer, so a rerun replays them in order)."""
    doc = {"endpoint": endpoint.rstrip("/"), "model": model, "kind": kind, "body": body,
           "repeat": int(repeat)}
    raw = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


class RequestCache:
    """``get(key)`` / ``put(key, ...)`` over one SQLite file in WAL mode (thread-safe).

    ``path=":memory:"`` keeps the cache in this process only (tests)."""

    def __init__(self, path: str | Path, *, timeout_s: float = 30.0):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=timeout_s, check_same_thread=False,
                                   isolation_level=None)  # autocommit: each put is durable
        try:
            if self.path != ":memory:":
                mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise ValueError(f"request cache {self.path}: SQLite refused WAL mode ({mode})")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise ValueError(f"request cache {self.path} is not a usable SQLite file: {e}") from None
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT response FROM requests WHERE key = ?", (key,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return json.loads(row[0])

    def put(self, key: str, endpoint: str, model: str, request: dict[str, Any],
            response: dict[str, Any]) -> None:
        """Store one answer (committed at once; a second put of the same key keeps the first)."""
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO requests (key, endpoint, model, request, response, created) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (key, endpoint, model, json.dumps(request, sort_keys=True),
                 json.dumps(response), time.time()))

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM requests").fetchone()[0])

    def journal_mode(self) -> str:
        with self._lock:
            return str(self._db.execute("PRAGMA journal_mode").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
