"""Load test of ``reasonlab serve`` over loopback: dynamic batching vs one request at a time.

N concurrent clients (threads, ``httpx``) each send a bounded number of greedy completion
requests (and stop at a time limit) to a server process on 127.0.0.1 serving a random
tiny-0.5m Llama (about 0.5M parameters; what it says does not matter, the work per token does).
The same server runs twice per repeat: ``max_batch=16`` (requests gathered within
``batch_wait_ms``) and ``max_batch=1`` (one at a time); the modes alternate so a change in the
machine's load hits both. Reports throughput (requests/s, tokens/s), p50/p95 latency, failed
requests, and the request cache's effect: the workload run through ``HTTPLM`` with a fresh
SQLite cache, then rerun against the stopped server (requests made: 0).

    .venv/bin/python benchmarks/serve_load.py --quick    # ~2 min on 2 loaded cores
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_result  # noqa: E402

CORPUS = [
    "Tom has 3 apples and buys 4 more. How many apples does he have?",
    "Step 1: 3 + 4 = 7.\nThe answer is 7.",
    "A train travels 60 km in 2 hours. What is its speed?",
    "Mia reads 12 pages a day for 5 days. Step 1: 12 * 5 = 60.\nThe answer is 60.",
    "The quick brown fox jumps over the lazy dog.",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_model(folder: Path, seed: int) -> None:
    import torch
    from transformers import LlamaForCausalLM

    from reasonlab.llama.configs import preset
    from reasonlab.llama.tokenizer import train_tokenizer

    tok = train_tokenizer(CORPUS, vocab_size=400, min_frequency=1)
    cfg = preset("tiny-0.5m", vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)


def serve_child(folder: str, port: int, max_batch: int, wait_ms: float, threads: int) -> None:
    import torch
    import uvicorn

    from reasonlab.lm.local import LocalLM
    from reasonlab.serve.app import Server, ServeConfig

    torch.set_num_threads(threads)
    lm = LocalLM.from_pretrained(folder, device="cpu", batch_size=max_batch)
    cfg = ServeConfig(model=folder, name="bench", port=port, max_batch=max_batch,
                      batch_wait_ms=wait_ms, max_queue=4096, threads=threads)
    uvicorn.run(Server(lm, cfg).app(), host="127.0.0.1", port=port, log_level="warning",
                access_log=False)


class ServerProcess:
    def __init__(self, folder: Path, max_batch: int, wait_ms: float, threads: int):
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = multiprocessing.get_context("fork").Process(
            target=serve_child, args=(str(folder), self.port, max_batch, wait_ms, threads),
            daemon=True)
        self.proc.start()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if not self.proc.is_alive():
                raise RuntimeError("the server process exited")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("the server did not start")

    def stats(self) -> dict:
        import httpx

        return httpx.get(self.url + "/health", timeout=10).json()

    def stop(self) -> None:
        if self.proc.is_alive():
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.join(15)
        if self.proc.is_alive():
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.join(5)


def prompts_for(n: int) -> list[str]:
    return [f"{CORPUS[i % len(CORPUS)][:30]} {i}" for i in range(n)]


def load(url: str, clients: int, per_client: int, max_tokens: int, time_limit_s: float) -> dict:
    """``clients`` threads, each sending at most ``per_client`` requests one after another,
    stopping at ``time_limit_s``. Every loop is bounded in count and time."""
    import httpx

    latencies: list[float] = []
    tokens, failed = [0], [0]
    lock = threading.Lock()
    deadline = time.monotonic() + time_limit_s
    prompts = prompts_for(clients * per_client)

    def client(c: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            for r in range(per_client):
                if time.monotonic() > deadline:
                    return
                body = {"model": "bench", "prompt": prompts[c * per_client + r],
                        "max_tokens": max_tokens, "temperature": 0}
                t0 = time.perf_counter()
                try:
                    resp = http.post("/v1/completions", json=body)
                    ok = resp.status_code == 200
                    used = resp.json()["usage"]["completion_tokens"] if ok else 0
                except httpx.HTTPError:
                    ok, used = False, 0
                dt = time.perf_counter() - t0
                with lock:
                    if ok:
                        latencies.append(dt)
                        tokens[0] += used
                    else:
                        failed[0] += 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = sorted(latencies)
    pct = (lambda q: lat[min(len(lat) - 1, int(round(q * (len(lat) - 1))))] * 1000) if lat else \
        (lambda q: float("nan"))
    return {"requests": len(lat), "failed": failed[0], "wall_s": wall,
            "requests_per_s": len(lat) / wall, "tokens_per_s": tokens[0] / wall,
            "p50_ms": pct(0.5), "p95_ms": pct(0.95)}


def cache_rerun(folder: Path, clients: int, n: int, max_tokens: int, wait_ms: float,
                threads: int) -> dict:
    """The workload through HTTPLM with a fresh cache, then again with the server stopped."""
    from reasonlab.lm.http import HTTPConfig, HTTPLM

    with tempfile.TemporaryDirectory() as d:
        cache = str(Path(d) / "requests.sqlite")
        server = ServerProcess(folder, 16, wait_ms, threads)
        try:
            lm = HTTPLM(HTTPConfig(base_url=server.url + "/v1", model="bench", cache=cache,
                                   max_concurrency=clients))
            first = lm.generate(prompts_for(n), max_new_tokens=max_tokens)
            first_requests = lm.counters["requests"]
            lm.close()
        finally:
            server.stop()
        again = HTTPLM(HTTPConfig(base_url=server.url + "/v1", model="bench", cache=cache,
                                  max_retries=0))
        t0 = time.perf_counter()
        second = again.generate(prompts_for(n), max_new_tokens=max_tokens)
        rerun_s = time.perf_counter() - t0
        same = [g.text for g in first] == [g.text for g in second]
        out = {"first_requests": first_requests, "rerun_requests": again.counters["requests"],
               "rerun_cache_hits": again.counters["cache_hits"], "rerun_same_answers": same,
               "rerun_s": rerun_s}
        again.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer requests (about 2 minutes)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in the server")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--per-client", type=int, default=None, help="requests per client")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-wait-ms", type=float, default=20.0)
    ap.add_argument("--time-limit-s", type=float, default=240.0, help="per load run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="serve")
    args = ap.parse_args()
    per_client = args.per_client or (4 if args.quick else 12)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(args.threads)
    runs = []
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "model"
        build_model(folder, args.seed)
        for rep in range(args.repeats):
            modes = [("batched", 16), ("one_at_a_time", 1)]
            if rep % 2:
                modes.reverse()
            row = {"repeat": rep}
            for mode, max_batch in modes:
                server = ServerProcess(folder, max_batch, args.batch_wait_ms, args.threads)
                try:
                    load(server.url, 2, 1, args.max_tokens, 60)  # warm-up
                    res = load(server.url, args.concurrency, per_client, args.max_tokens,
                               args.time_limit_s)
                    stats = server.stats()
                    res["mean_batch_rows"] = stats["rows"] / max(1, stats["batches"])
                finally:
                    server.stop()
                row[mode] = res
                print(f"repeat {rep} {mode}: {res['requests_per_s']:.2f} req/s, "
                      f"p50 {res['p50_ms']:.0f} ms, p95 {res['p95_ms']:.0f} ms, "
                      f"failed {res['failed']}, mean batch {res['mean_batch_rows']:.1f}", flush=True)
            row["ratio"] = row["batched"]["requests_per_s"] / row["one_at_a_time"]["requests_per_s"]
            runs.append(row)
        cache = cache_rerun(folder, args.concurrency, args.concurrency * per_client,
                            args.max_tokens, args.batch_wait_ms, args.threads)
    ratios = [r["ratio"] for r in runs]
    batched = [r["batched"] for r in runs]
    single = [r["one_at_a_time"] for r in runs]
    med = statistics.median
    result = {
        "batching_throughput_ratio": med(ratios),
        "batching_throughput_ratio_per_repeat": ratios,
        "batching_throughput_ratio_range": [min(ratios), max(ratios)],
        "concurrency": args.concurrency,
        "p50_latency_ms": med([b["p50_ms"] for b in batched]),
        "p95_latency_ms": med([b["p95_ms"] for b in batched]),
        "one_at_a_time_p50_latency_ms": med([s["p50_ms"] for s in single]),
        "one_at_a_time_p95_latency_ms": med([s["p95_ms"] for s in single]),
        "failed_requests": sum(b["failed"] + s["failed"] for b, s in zip(batched, single)),
        "rerun_requests": cache["rerun_requests"],
        "cache": cache,
        "runs": runs,
        "settings": {"quick": args.quick, "threads": args.threads, "per_client": per_client,
                     "max_tokens": args.max_tokens, "repeats": args.repeats,
                     "batch_wait_ms": args.batch_wait_ms, "max_batch": 16, "model": "tiny-0.5m (random)",
                     "loopback": True},
        "seeds": [args.seed],
        "note": "measured on a shared 2-core machine under load from other jobs",
    }
    rows = [(r["repeat"], f"{r['batched']['requests_per_s']:.2f}",
             f"{r['one_at_a_time']['requests_per_s']:.2f}", f"{r['ratio']:.2f}",
             f"{r['batched']['p50_ms']:.0f}/{r['batched']['p95_ms']:.0f}",
             f"{r['one_at_a_time']['p50_ms']:.0f}/{r['one_at_a_time']['p95_ms']:.0f}")
            for r in runs]
    print_table(rows, ("repeat", "batched req/s", "single req/s", "ratio", "batched p50/p95 ms",
                       "single p50/p95 ms"))
    print(f"cache: first run {cache['first_requests']} requests, rerun {cache['rerun_requests']} "
          f"requests ({cache['rerun_cache_hits']} cache hits, same answers: "
          f"{cache['rerun_same_answers']})")
    print(write_result(args.out, result))


if __name__ == "__main__":
    main()
