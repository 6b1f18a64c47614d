"""The model cache: named recipes (solvers, the herd, other methods' models) built on first use.

``model_path(name)`` and ``resolve_model(spec)`` live in :mod:`reasonlab.models.cache`;
``Recipe`` and ``register`` in :mod:`reasonlab.models.recipes`.
"""
