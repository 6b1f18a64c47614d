"""``reasonlab report RUN_DIR...``: one self-contained HTML page a researcher can send.

For a demo folder (``reasonlab demo --out DIR``; it holds ``demo.json`` or stage folders whose
``results.json`` carries a ``headline``) the page opens with a summary table — each method, what
was measured, our number with its interval, the paper's claim and whether they agree — followed by
one section per method: its results table (numbers rounded, intervals as ``[a, b]``), its plots
(PNG files inlined as base64), example outputs, timings and the config folded away in
``<details>``. Any other run folder gets a section with its results, plots and config. Every text
is HTML-escaped; the page loads nothing from outside itself.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any, Iterable

from reasonlab.runs import atomic_write_text, read_json

RUN_FILES = ("config.json", "results.json", "summary.json", "metrics.jsonl")
MAX_PLOTS = 6  # per section: the first plots by name (a run may hold one per behaviour)
VERDICTS = ("agree", "differs", "not comparable")


# ---------------------------------------------------------------------------- formatting
def esc(text: Any) -> str:
    """HTML-escape any value's text (quotes included)."""
    return html.escape(str(text), quote=True)


def fmt_number(v: float | int, digits: int = 3) -> str:
    """A number for a table: integers as they are (thousands separated), floats to ``digits``
    significant digits without exponent between 1e-3 and 1e4, ``nan``/``inf`` spelled out."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == 0:
        return "0"
    if abs(v) >= 1e4:
        return f"{v:,.0f}"
    if abs(v) < 1e-3:
        return f"{v:.{digits - 1}e}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(v))))
    s = f"{round(v, decimals):.{decimals}f}"
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def is_interval(v: Any) -> bool:
    return (isinstance(v, (list, tuple)) and len(v) == 2
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v))


def fmt_interval(v: Iterable[float], digits: int = 3) -> str:
    """``[a, b]`` with both ends rounded like :func:`fmt_number`."""
    a, b = list(v)
    return f"[{fmt_number(a, digits)}, {fmt_number(b, digits)}]"


def fmt_value(v: Any) -> str:
    """Any result value as short text: numbers rounded, two-number lists as intervals, None as
    an em dash, long lists cut after 8 items."""
    if v is None:
        return "—"
    if isinstance(v, (bool, int, float)):
        return fmt_number(v)
    if is_interval(v):
        return fmt_interval(v)
    if isinstance(v, (list, tuple)):
        items = [fmt_value(x) for x in v[:8]]
        return "[" + ", ".join(items) + (", …]" if len(v) > 8 else "]")
    if isinstance(v, dict):
        return json.dumps(v, default=str)[:200]
    return str(v)


def fmt_with_interval(value: Any, interval: Any) -> str:
    """``0.123 [0.1, 0.15]`` (the interval only when there is one)."""
    text = fmt_value(value)
    return f"{text} {fmt_interval(interval)}" if is_interval(interval) else text


def flatten(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts to (dotted key, value) rows; lists stay one value."""
    if isinstance(d, dict):
        rows: list[tuple[str, Any]] = []
        for k, v in d.items():
            rows += flatten(v, f"{prefix}{k}.")
        return rows
    return [(prefix.rstrip("."), d)]


def table(rows: Iterable[tuple[Any, Any]], head: tuple[str, str] = ("", "")) -> str:
    """A two-column table of (key, value) rows, values formatted by :func:`fmt_value`."""
    body = "".join(f"<tr><td>{esc(k)}</td><td class='num'>{esc(fmt_value(v))}</td></tr>"
                   for k, v in rows)
    th = f"<tr><th>{esc(head[0])}</th><th>{esc(head[1])}</th></tr>" if any(head) else ""
    return f"<table>{th}{body}</table>"


def image(png: Path, caption: str) -> str:
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    return (f"<figure><img alt='{esc(caption)}' src='data:image/png;base64,{data}'/>"
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def plots(folder: Path, limit: int = MAX_PLOTS) -> str:
    pngs = sorted(folder.rglob("*.png"), key=lambda p: (len(p.relative_to(folder).parts), str(p)))
    out = "".join(image(p, str(p.relative_to(folder))) for p in pngs[:limit])
    if len(pngs) > limit:
        out += f"<p class='note'>{len(pngs) - limit} more plots in {esc(folder.name)}/</p>"
    return out


# ---------------------------------------------------------------------------- page
STYLE = ("body{font-family:system-ui,sans-serif;max-width:1150px;margin:1em auto;padding:0 1em;"
         "color:#222}table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;"
         "padding:3px 8px;font-size:13px;text-align:left;vertical-align:top}th{background:#f3f3f3}"
         "td.num{font-variant-numeric:tabular-nums}img{max-width:540px;margin:4px}"
         "figure{display:inline-block;margin:0 8px 8px 0}figcaption{font-size:11px;color:#666}"
         "pre{background:#f7f7f7;padding:6px;white-space:pre-wrap;font-size:12px}"
         ".agree{color:#17702a;font-weight:600}.differs{color:#b03a00;font-weight:600}"
         ".not-comparable{color:#666}.failed{color:#b00020;font-weight:600}.note{color:#666;"
         "font-size:12px}section{border-top:2px solid #ddd;margin-top:1.5em}"
         "iframe{width:100%;height:420px;border:1px solid #ccc}")


def page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width'><title>{esc(title)}</title>"
            f"<link rel='icon' href='data:,'><style>{STYLE}</style></head><body>"
            f"<h1>{esc(title)}</h1>{body}</body></html>")


def is_run(path: Path) -> bool:
    """Whether ``path`` is a run directory (it holds a file a run writes)."""
    return any((path / f).is_file() for f in RUN_FILES)


def run_section(run_dir: Path) -> str:
    """A section for any run directory: results, summary, plots, config folded away."""
    parts = [f"<h2>{esc(run_dir.name or run_dir)}</h2><p class='note'>{esc(run_dir)}</p>"]
    for name in ("results.json", "summary.json"):
        if (run_dir / name).exists():
            parts.append(f"<h3>{esc(name)}</h3>" + table(flatten(read_json(run_dir / name))))
    parts.append(plots(run_dir))
    if (run_dir / "config.json").exists():
        parts.append("<details><summary>config</summary>"
                     + table(flatten(read_json(run_dir / "config.json"))) + "</details>")
    return "<section>" + "".join(parts) + "</section>"


# ---------------------------------------------------------------------------- demo folders
def demo_stages(folder: Path) -> list[tuple[str, dict[str, Any] | None, dict[str, Any] | None]]:
    """(stage name, results, error) of each stage folder of a demo folder, in the order of
    ``demo.json`` when present; stages never run are left out."""
    order: list[str] = []
    if (folder / "demo.json").is_file():
        order = list(read_json(folder / "demo.json").get("stages", {}))
    names = order + sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name not in order)
    out = []
    for n in names:
        d = folder / n
        res = read_json(d / "results.json") if (d / "results.json").is_file() else None
        err = read_json(d / "error.json") if (d / "error.json").is_file() else None
        if res is not None and "headline" not in res:
            continue
        if res is not None or err is not None:
            out.append((n, res, err))
    return out


def is_demo(folder: Path) -> bool:
    return folder.is_dir() and bool(demo_stages(folder))


def _verdict(v: str) -> str:
    cls = v.replace(" ", "-") if v in VERDICTS else "not-comparable"
    return f"<span class='{cls}'>{esc(v)}</span>"


def summary_table(stages: list[tuple[str, dict | None, dict | None]]) -> str:
    rows = []
    for name, res, err in stages:
        if res is None:
            e = err or {}
            rows.append(f"<tr><td><a href='#{esc(name)}'>{esc(e.get('method', name))}</a></td>"
                        f"<td colspan='3' class='failed'>failed: {esc(e.get('error', ''))}</td>"
                        f"<td>—</td></tr>")
            continue
        h = res.get("headline", {})
        rows.append(f"<tr><td><a href='#{esc(name)}'>{esc(res.get('method', name))}</a></td>"
                    f"<td>{esc(h.get('measured', ''))}</td>"
                    f"<td class='num'>{esc(fmt_with_interval(h.get('value'), h.get('interval')))}</td>"
                    f"<td>{esc(h.get('claim', ''))}</td><td>{_verdict(h.get('verdict', ''))}</td></tr>")
    return ("<table class='summary'><tr><th>method</th><th>what was measured</th>"
            "<th>ours [95% interval]</th><th>the paper's claim</th><th>verdict</th></tr>"
            + "".join(rows) + "</table>")


def interval_key(key: str, keys: Any) -> str | None:
    """The key holding ``key``'s 95% interval, if ``keys`` has one: ``X ci95``, ``X_ci95``,
    ``X.ci95``, ``A_ci95`` for ``A_accuracy``-like keys, ``A.ci95`` for ``A.value``."""
    cands = [f"{key} ci95", f"{key}_ci95", f"{key}.ci95"]
    if key.endswith(".value"):
        cands.append(key[: -len(".value")] + ".ci95")
    if "_" in key:
        cands.append(key.rsplit("_", 1)[0] + "_ci95")
    return next((c for c in cands if c in keys and c != key), None)


def table_rows(tab: dict[str, Any]) -> list[tuple[str, Any]]:
    """A stage table's rows with each interval folded into its value's row (``value [a, b]``)."""
    pairs = {k: interval_key(k, tab) for k in tab}
    used = {iv for k, iv in pairs.items() if iv is not None and is_interval(tab[iv])
            and not is_interval(tab[k])}
    rows: list[tuple[str, Any]] = []
    for k, v in tab.items():
        if k in used:
            continue
        iv = pairs[k]
        rows.append((k, _Joined(v, tab[iv]) if iv in used else v))
    return rows


class _Joined:
    """A value with its interval, formatted together."""

    def __init__(self, value: Any, interval: Any):
        self.value, self.interval = value, interval

    def __str__(self) -> str:
        return fmt_with_interval(self.value, self.interval)


def stage_section(folder: Path, name: str, res: dict | None, err: dict | None) -> str:
    d = folder / name
    if res is None:
        e = err or {}
        return (f"<section id='{esc(name)}'><h2>{esc(e.get('method', name))}</h2>"
                f"<p class='failed'>stage failed: {esc(e.get('error', ''))}</p></section>")
    h = res.get("headline", {})
    parts = [f"<section id='{esc(name)}'><h2>{esc(res.get('method', name))}</h2>",
             f"<p><b>{esc(h.get('measured', ''))}</b>: "
             f"{esc(fmt_with_interval(h.get('value'), h.get('interval')))} — paper: "
             f"{esc(h.get('claim', ''))} ({_verdict(h.get('verdict', ''))})"
             + (f"<br><span class='note'>{esc(h.get('note'))}</span>" if h.get("note") else "")
             + "</p>"]
    tab = res.get("table") or {}
    if tab:
        parts.append("<h3>results</h3>" + _stage_table(tab))
    figs = plots(d)
    if figs:
        parts.append("<h3>plots</h3>" + figs)
    examples = res.get("examples") or []
    if examples:
        parts.append("<h3>example outputs</h3>" + "".join(example(d, ex) for ex in examples))
    parts.append(f"<h3>timing</h3><p>{esc(fmt_number(float(res.get('minutes', 0.0))))} minutes"
                 f"{' (quick settings)' if res.get('quick') else ''}</p>")
    cfg = {"stage": read_json(d / "config.json") if (d / "config.json").is_file() else {},
           "method": res.get("config", {})}
    parts.append("<details><summary>config</summary>" + table(flatten(cfg)) + "</details>")
    return "".join(parts) + "</section>"


def example(stage_dir: Path, ex: dict[str, Any]) -> str:
    """An example output: text in a <pre>, or a page the stage wrote (``html``: its path in the
    stage folder) inlined in a sandboxed frame (no scripts, nothing loaded from outside)."""
    out = f"<p>{esc(ex.get('title', ''))}</p>"
    if ex.get("html"):
        p = stage_dir / str(ex["html"])
        if p.is_file():
            return out + (f"<iframe sandbox='' title='{esc(ex.get('title', ''))}' "
                          f"srcdoc='{esc(p.read_text())}'></iframe>")
    return out + f"<pre>{esc(ex.get('text', ''))}</pre>"


def _stage_table(tab: dict[str, Any]) -> str:
    body = "".join(f"<tr><td>{esc(k)}</td><td class='num'>"
                   f"{esc(str(v) if isinstance(v, _Joined) else fmt_value(v))}</td></tr>"
                   for k, v in table_rows(tab))
    return f"<table><tr><th>quantity</th><th>value [95% interval]</th></tr>{body}</table>"


def demo_report(folder: Path, title: str = "reasonlab demo") -> str:
    stages = demo_stages(folder)
    summary = read_json(folder / "demo.json") if (folder / "demo.json").is_file() else {}
    done = sum(1 for _, r, _ in stages if r is not None)
    intro = (f"<p class='note'>{done} of {len(stages)} stages finished"
             + (f"; {fmt_number(float(summary['minutes']))} minutes in the last run"
                if "minutes" in summary else "")
             + (" (quick settings)" if summary.get("quick") else "") + ".</p>")
    timings = table([(n, (r or {}).get("minutes") if r else "failed") for n, r, _ in stages],
                    ("stage", "minutes"))
    body = (intro + "<h2>summary</h2>" + summary_table(stages)
            + "".join(stage_section(folder, n, r, e) for n, r, e in stages)
            + "<section><h2>timings</h2>" + timings + "</section>")
    return page(title, body)


def write_demo_report(folder: str | Path, out: str | Path, title: str = "reasonlab demo") -> Path:
    folder = Path(folder)
    if not is_demo(folder):
        raise ValueError(f"no finished or failed demo stage in {folder}")
    out = Path(out)
    atomic_write_text(out, demo_report(folder, title))
    return out


# ---------------------------------------------------------------------------- entry point
def collect_runs(path: Path) -> list[Path]:
    """``path`` itself when it is a run, else the run folders directly inside it."""
    if is_run(path):
        return [path]
    return sorted(p for p in path.iterdir() if p.is_dir() and is_run(p)) if path.is_dir() else []


def write_report(run_dirs: Iterable[str | Path], out: str | Path, title: str = "reasonlab report") -> Path:
    """One HTML page from run folders (a single demo folder gets the demo page). A folder that
    does not exist, or that holds no run, is an error naming it."""
    dirs = [Path(d) for d in run_dirs]
    if not dirs:
        raise ValueError("no run directory given")
    missing = [str(d) for d in dirs if not d.is_dir()]
    if missing:
        raise FileNotFoundError(f"run directory not found: {', '.join(missing)}")
    if len(dirs) == 1 and is_demo(dirs[0]):
        return write_demo_report(dirs[0], out, title if title != "reasonlab report" else "reasonlab demo")
    runs = {d: collect_runs(d) for d in dirs}
    empty = [str(d) for d, r in runs.items() if not r]
    if empty:
        raise ValueError(f"no runs in {', '.join(empty)}: a run directory holds config.json, "
                         "results.json or metrics.jsonl (give the folder a command's --out wrote)")
    body = "".join(run_section(r) for rs in runs.values() for r in rs)
    out = Path(out)
    atomic_write_text(out, page(title, body))
    return out
