"""Fault tests against a real server process: killed mid-run and restarted, the client retries
and the run finishes with every answer; the rerun against the stopped server needs no request."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import httpx
import pytest

from reasonlab.device import torch_threads
from reasonlab.lm.http import HTTPConfig, HTTPLM
from reasonlab.lm.local import LocalLM
from serve_utils import free_port, micro_model

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the server is a forked child


def _serve_child(model_dir: str, port: int) -> None:  # runs in a forked process
    import torch
    import uvicorn

    from reasonlab.serve.app import Server, ServeConfig

    torch.set_num_threads(1)
    lm = LocalLM.from_pretrained(model_dir, device="cpu", batch_size=4)
    app = Server(lm, ServeConfig(model=model_dir, name="micro", port=port, max_batch=4)).app()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def wait_healthy(port: int, alive) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert alive(), "the server process exited"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError("server did not start")


def start_server(model_dir, port: int):
    """A server in a forked process (no second import of torch), killable with SIGKILL."""
    import multiprocessing

    import uvicorn  # noqa: F401 - imported once here, inherited by the child

    proc = multiprocessing.get_context("fork").Process(target=_serve_child,
                                                       args=(str(model_dir), port), daemon=True)
    proc.start()
    wait_healthy(port, proc.is_alive)
    return proc


def kill(proc) -> None:
    if proc.is_alive():
        os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)


def rows(cache_path) -> int:
    try:
        with sqlite3.connect(cache_path, timeout=5) as db:
            return int(db.execute("SELECT COUNT(*) FROM requests").fetchone()[0])
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_server_killed_mid_run_then_rerun_from_cache(tiny_tokenizer, tmp_path):
    model = micro_model(tiny_tokenizer)
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    prompts = [f"Tom has {i} apples and" for i in range(24)]
    with torch_threads(1):
        ref = LocalLM(model, tiny_tokenizer, device="cpu", batch_size=8).generate(prompts, max_new_tokens=32)
    port, cache = free_port(), tmp_path / "requests.sqlite"
    url = f"http://127.0.0.1:{port}/v1"
    proc = start_server(model_dir, port)
    lm = HTTPLM(HTTPConfig(base_url=url, model="micro", cache=str(cache), max_concurrency=2,
                           backoff_s=0.2, max_backoff_s=1.0, max_retries=60, timeout_s=30))
    out: dict = {}
    worker = threading.Thread(target=lambda: out.update(gens=lm.generate(prompts, max_new_tokens=32)))
    try:
        worker.start()
        deadline = time.monotonic() + 60
        while rows(cache) < 3:
            assert time.monotonic() < deadline and worker.is_alive()
            time.sleep(0.01)
        kill(proc)
        done_at_kill = rows(cache)
        assert done_at_kill < len(prompts)  # killed mid-run, not after it
        time.sleep(0.5)
        proc = start_server(model_dir, port)
        worker.join(180)
        assert not worker.is_alive()
    finally:
        kill(proc)
    lm.close()
    assert [g.text for g in out["gens"]] == [g.text for g in ref]
    assert lm.counters["retries"] >= 1 and rows(cache) == len(prompts)
    # the server is gone: the rerun is answered from the cache with zero requests
    again = HTTPLM(HTTPConfig(base_url=url, model="micro", cache=str(cache), max_retries=0))
    assert [g.text for g in again.generate(prompts, max_new_tokens=32)] == [g.text for g in ref]
    assert again.counters["requests"] == 0 and again.counters["cache_hits"] == len(prompts)
    again.close()


@pytest.mark.slow
def test_cli_serves_a_model_folder(tiny_tokenizer, tmp_path):
    """``python -m reasonlab.serve DIR`` (a fresh interpreter: slow to start on a loaded machine)."""
    model_dir = tmp_path / "model"
    micro_model(tiny_tokenizer).save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    bad = subprocess.run([sys.executable, "-m", "reasonlab.serve", str(model_dir), "--set",
                          "max_batch=0"], env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "max_batch" in bad.stderr
    proc = subprocess.Popen([sys.executable, "-m", "reasonlab.serve", str(model_dir), "--port",
                             str(port), "--api-key", "k"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_healthy(port, lambda: proc.poll() is None)
        lm = HTTPLM(HTTPConfig(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", cache=None))
        assert lm.model_name == "model"  # the folder's name
        assert len(lm.generate(["Tom has"], max_new_tokens=4)[0].token_ids) == 4
        lm.close()
    finally:
        proc.kill()
        proc.wait(10)
