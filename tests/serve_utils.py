"""Helpers for the HTTP tests: a micro Llama, a free loopback port, an in-process server."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import torch

PROMPTS = ["Tom has", "A train travels", "Hello world! Step 1:", "The quick brown fox",
           "Mia reads 12 pages", "Step 1: 3 + 4 ="]


def micro_model(tokenizer, seed: int = 0):
    """A ~30k-parameter LlamaForCausalLM; a wide init so greedy text is not one repeated token."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=128, initializer_range=0.3,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).eval()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(lm, **cfg_kwargs):
    """Serve ``lm`` on 127.0.0.1 from a thread; yields (base_url, Server); stops it after."""
    import uvicorn

    from reasonlab.serve.app import Server, ServeConfig

    port = free_port()
    cfg = ServeConfig(name=cfg_kwargs.pop("name", "micro"), port=port, **cfg_kwargs)
    server = Server(lm, cfg)
    uv = uvicorn.Server(uvicorn.Config(server.app(), host="127.0.0.1", port=port,
                                       log_level="warning", access_log=False))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1", server
    finally:
        uv.should_exit = True
        thread.join(timeout=20)
        server.batcher.close()
