"""A self-contained HTML page of one MCTS search (:mod:`reasonlab.reasoning.mcts`): the tree with
each step's text, N, Q, prior and outcome, the committed path highlighted and the preference pairs
taken marked. Every text is HTML-escaped; no script, no external file."""

from __future__ import annotations

import html
from typing import Any

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
pre.prompt{background:#f4f4f4;padding:.6em;white-space:pre-wrap}
ul.tree{list-style:none;padding-left:1.4em;border-left:1px dotted #bbb}
li{margin:.15em 0}
.step{font-family:ui-monospace,monospace;white-space:pre-wrap;padding:0 .3em}
.stats{color:#666;font-size:.85em}
.path>.node .step{background:#fff3b0;font-weight:600}
.ok{color:#087f23}.bad{color:#b00020}
.chosen{outline:2px solid #087f23}.rejected{outline:2px solid #b00020}
"""


def _node_html(node: dict[str, Any], path: set[int], chosen: set[int], rejected: set[int]) -> str:
    cls = []
    if node["id"] in path:
        cls.append("path")
    mark = ""
    if node["id"] in chosen:
        mark += ' <b class="ok">[chosen]</b>'
    if node["id"] in rejected:
        mark += ' <b class="bad">[rejected]</b>'
    outcome = ""
    if node.get("terminal"):
        outcome = (' <span class="ok">✔ correct</span>' if node.get("correct")
                   else ' <span class="bad">✘ wrong</span>')
    se = node.get("self_eval")
    stats = (f'N={node["N"]} Q={node["Q"]:.3f} prior={node["prior"]:.3f} r={node["r"]:.3f}'
             + (f" C={se:.3f}" if se is not None else ""))
    step_cls = "step" + (" chosen" if node["id"] in chosen else "") + \
        (" rejected" if node["id"] in rejected else "")
    text = html.escape(node["text"].rstrip("\n")) or ("(root)" if node["depth"] == 0 else "(empty)")
    inner = (f'<span class="node"><span class="{step_cls}">{text}</span> '
             f'<span class="stats">{html.escape(stats)}</span>{outcome}{mark}</span>')
    kids = node.get("children") or []
    if kids:
        inner += '<ul class="tree">' + "".join(_node_html(c, path, chosen, rejected)
                                                for c in kids) + "</ul>"
    return f'<li class="{" ".join(cls)}">{inner}</li>'


def tree_html(result: dict[str, Any], prompt: str, title: str = "MCTS search") -> str:
    """The page of a :meth:`SearchResult.to_dict` record searched from ``prompt``."""
    path = set(result.get("path", []))
    chosen = {p["chosen_id"] for p in result.get("pairs", [])}
    rejected = {p["rejected_id"] for p in result.get("pairs", [])}
    verdict = {True: "correct", False: "wrong", None: "unfinished"}[result.get("correct")]
    pairs = "".join(
        f"<li>depth {p['depth']}: chosen Q={p['chosen_q']:.3f} (N={p['chosen_n']}) "
        f"<code>{html.escape(p['chosen'])}</code> vs rejected Q={p['rejected_q']:.3f} "
        f"(N={p['rejected_n']}) <code>{html.escape(p['rejected'])}</code>, ε={p['epsilon']:.3f}</li>"
        for p in result.get("pairs", []))
    stats = html.escape(", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                  for k, v in (result.get("stats") or {}).items()))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<pre class='prompt'>{html.escape(prompt)}</pre>"
            f"<p>Committed solution ({verdict}):</p><pre class='prompt'>"
            f"{html.escape(result.get('solution', ''))}</pre><p class='stats'>{stats}</p>"
            f"<h2>Pairs taken</h2><ul>{pairs or '<li>none</li>'}</ul>"
            f"<h2>Tree</h2><p class='stats'>highlighted: the committed path</p>"
            f"<ul class='tree'>{_node_html(result['tree'], path, chosen, rejected)}</ul>"
            f"</body></html>")
