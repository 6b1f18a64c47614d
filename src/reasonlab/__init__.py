"""reasonlab: a toolkit for research on how language models learn to reason."""

__version__ = "0.1.0"
