"""``reasonlab serve``: an OpenAI-compatible server over a local model, with dynamic batching."""

from reasonlab.serve.app import ServeConfig, create_app

__all__ = ["ServeConfig", "create_app"]
