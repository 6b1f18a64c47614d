"""``reasonlab review``: the human review step of MATH² (arXiv:2407.21009, §2, step 6) as a
local web page (FastAPI, plain HTML forms, no JavaScript).

A person sees each generated question with its skills, the generator's solution, the attempted
solution, the rubric votes and the final answers, edits the question, accepts or rejects it,
and can ask the model for help on one question. Every decision is written to SQLite at once
(each form post is one committed transaction), so a reload or a restart shows it; the export is
JSONL. Everything shown is escaped (``html.escape``), so a question holding markup shows as text.
The page binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import html
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import parse_qs

from fastapi import Request  # module level: the routes' annotations resolve here

from reasonlab.skills import prompts as P

STATUSES = ("pending", "accepted", "rejected")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (id TEXT PRIMARY KEY, pos INTEGER NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS decisions (id TEXT PRIMARY KEY, status TEXT NOT NULL, question TEXT,
    note TEXT NOT NULL DEFAULT '', updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS help (id TEXT NOT NULL, reply TEXT NOT NULL, created REAL NOT NULL);
"""


class ReviewStore:
    """Queue items and decisions in one SQLite file (WAL, one commit per change)."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise ValueError(f"review database {self.path} is not a usable SQLite file: {e}") from None

    def load(self, items: Iterable[dict[str, Any]]) -> int:
        """Add queue items not yet present (by ``id``); returns how many were added."""
        added = 0
        with self._lock:
            pos = self._db.execute("SELECT COALESCE(MAX(pos), -1) FROM items").fetchone()[0] + 1
            for it in items:
                if "id" not in it or "question" not in it:
                    raise ValueError(f"a review item needs 'id' and 'question': {str(it)[:120]}")
                cur = self._db.execute("INSERT OR IGNORE INTO items (id, pos, data) VALUES (?, ?, ?)",
                                       (str(it["id"]), pos, json.dumps(it)))
                added += cur.rowcount
                pos += cur.rowcount
        return added

    def ids(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT id FROM items ORDER BY pos")]

    def item(self, item_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT data FROM items WHERE id = ?", (item_id,)).fetchone()
            if row is None:
                return None
            d = self._db.execute("SELECT status, question, note, updated FROM decisions WHERE id = ?",
                                 (item_id,)).fetchone()
            helps = [r[0] for r in self._db.execute(
                "SELECT reply FROM help WHERE id = ? ORDER BY created", (item_id,))]
        it = json.loads(row[0])
        it["review"] = {"status": d[0] if d else "pending",
                        "question": d[1] if d and d[1] is not None else it["question"],
                        "note": d[2] if d else "", "updated": d[3] if d else None, "help": helps}
        return it

    def decide(self, item_id: str, status: str, question: str | None = None, note: str = "") -> None:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {list(STATUSES)}, got {status!r}")
        if self.item(item_id) is None:
            raise KeyError(f"no review item {item_id!r}")
        with self._lock:
            self._db.execute(
                "INSERT INTO decisions (id, status, question, note, updated) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET status=excluded.status, question=excluded.question, "
                "note=excluded.note, updated=excluded.updated",
                (item_id, status, question, note, time.time()))

    def add_help(self, item_id: str, reply: str) -> None:
        with self._lock:
            self._db.execute("INSERT INTO help (id, reply, created) VALUES (?, ?, ?)",
                             (item_id, reply, time.time()))

    def export(self) -> list[dict[str, Any]]:
        """Every item with its decision: ``status``, the (edited) ``question``, ``note``."""
        out = []
        for i in self.ids():
            it = self.item(i)
            r = it.pop("review")
            out.append({**it, "original_question": it["question"], "question": r["question"],
                        "status": r["status"], "note": r["note"], "help": r["help"]})
        return out

    def close(self) -> None:
        with self._lock:
            self._db.close()


# ---------------------------------------------------------------------------- HTML
def esc(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


_STYLE = ("body{font-family:sans-serif;max-width:60em;margin:1em auto}"
          "pre{white-space:pre-wrap;background:#f4f4f4;padding:.5em}"
          "td,th{padding:.2em .6em;text-align:left;vertical-align:top}"
          ".accepted{color:#070}.rejected{color:#a00}")


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<style>{_STYLE}</style></head><body>{body}</body></html>")


def index_html(store: ReviewStore) -> str:
    rows = []
    for i in store.ids():
        it = store.item(i)
        r = it["review"]
        rows.append(f"<tr><td><a href='/item/{esc(i)}'>{esc(i)}</a></td>"
                    f"<td class='{esc(r['status'])}'>{esc(r['status'])}</td>"
                    f"<td>{esc(', '.join(map(str, it.get('skills', []))))}</td>"
                    f"<td>{esc(r['question'][:120])}</td></tr>")
    counts = {s: 0 for s in STATUSES}
    for i in store.ids():
        counts[store.item(i)["review"]["status"]] += 1
    summary = ", ".join(f"{v} {k}" for k, v in counts.items())
    return _page("MATH² review", f"<h1>MATH² review</h1><p>{esc(summary)} · "
                 "<a href='/export.jsonl'>export JSONL</a></p><table><tr><th>id</th><th>status</th>"
                 "<th>skills</th><th>question</th></tr>" + "".join(rows) + "</table>")


def item_html(it: dict[str, Any], has_model: bool) -> str:
    r = it["review"]
    iid = esc(it["id"])
    att = it.get("attempt") or {}
    helps = "".join(f"<pre class='help'>{esc(h)}</pre>" for h in r["help"])
    help_form = (f"<form method='post' action='/item/{iid}/help'><button id='help' type='submit'>"
                 "Ask the model for help</button></form>" if has_model else
                 "<p>(no model configured for help)</p>")
    return _page(f"review {it['id']}", f"""
<p><a href='/'>all questions</a></p>
<h1>Question {iid} <span id='status' class='{esc(r['status'])}'>{esc(r['status'])}</span></h1>
<p>Skills: <span id='skills'>{esc(', '.join(map(str, it.get('skills', []))))}</span></p>
<h2>Question</h2><div id='question'>{esc(r['question'])}</div>
<h2>Generator's solution</h2><pre>{esc(it.get('solution'))}</pre>
<p>Stated answer: {esc(it.get('stated_answer'))}</p>
<h2>Attempted solution</h2><pre>{esc(att.get('solution'))}</pre>
<p>Flaws: {esc(att.get('flaws'))} · answer: {esc(att.get('answer'))}</p>
<h2>Votes</h2><p>Rubric: <span id='rubric'>{esc(it.get('rubric_votes'))}</span></p>
<p>Final answers: {esc(it.get('final_answers'))} → <b id='final'>{esc(it.get('final_answer'))}</b>
(agreement {esc(it.get('agreement'))})</p>
<h2>Decision</h2>
<form method='post' action='/item/{iid}/decide'>
<textarea id='edit' name='question' rows='5' cols='80'>{esc(r['question'])}</textarea><br>
Note: <input id='note' name='note' size='60' value='{esc(r['note'])}'><br>
<button id='accept' name='action' value='accepted' type='submit'>Accept</button>
<button id='reject' name='action' value='rejected' type='submit'>Reject</button>
<button id='save' name='action' value='pending' type='submit'>Save edit</button>
</form>
<h2>Help</h2>{help_form}{helps}
""")


# ---------------------------------------------------------------------------- the app
def create_app(store: ReviewStore, model: Any = None):
    """The review app over ``store``; ``model`` (a LanguageModel) answers the help button."""
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse

    from reasonlab.skills.calls import chat_messages

    app = FastAPI(title="reasonlab review", docs_url=None, redoc_url=None, openapi_url=None)

    def get(item_id: str) -> dict[str, Any]:
        it = store.item(item_id)
        if it is None:
            from fastapi import HTTPException

            raise HTTPException(404, f"no review item {item_id!r}")
        return it

    async def form(request: Request) -> dict[str, str]:
        raw = (await request.body()).decode("utf-8", errors="replace")
        return {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return index_html(store)

    @app.get("/item/{item_id}", response_class=HTMLResponse)
    def item(item_id: str) -> str:
        return item_html(get(item_id), model is not None)

    @app.post("/item/{item_id}/decide")
    async def decide(item_id: str, request: Request):
        it = get(item_id)
        f = await form(request)
        status = f.get("action", "pending")
        if status not in STATUSES:
            return PlainTextResponse(f"action must be one of {list(STATUSES)}", status_code=400)
        question = f.get("question", it["review"]["question"]).replace("\r\n", "\n")
        store.decide(item_id, status, question, f.get("note", ""))
        return RedirectResponse(f"/item/{item_id}", status_code=303)

    @app.post("/item/{item_id}/help")
    def help_(item_id: str):
        it = get(item_id)
        if model is None:
            return PlainTextResponse("no model configured for help", status_code=400)
        r = it["review"]
        gen = model.chat([chat_messages(P.review_help(r["question"], r["note"]))],
                         max_new_tokens=512, temperature=0.0)[0]
        store.add_help(item_id, gen.text)
        return RedirectResponse(f"/item/{item_id}", status_code=303)

    @app.get("/export.jsonl")
    def export():
        text = "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in store.export())
        return PlainTextResponse(text, media_type="application/x-ndjson")

    return app


def export_jsonl(store: ReviewStore, path: str | Path) -> int:
    from reasonlab.runs import write_jsonl

    rows = store.export()
    write_jsonl(path, rows)
    return len(rows)
