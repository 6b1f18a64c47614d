"""Language-model interface: local HF models and OpenAI-compatible endpoints."""

from reasonlab.lm.base import Generation, LanguageModel, Message, ScoredContinuation

__all__ = ["Generation", "LanguageModel", "Message", "ScoredContinuation"]
