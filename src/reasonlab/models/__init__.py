"""The model cache: named recipes (solvers, the herd, other methods' models) built on first use.

``model_path(name)`` and ``resolve_model(spec)`` live in :mod:`reasonlab.models.cache`;
``Recipe`` and ``register`` in :mod:`reasonlab.models.recipes`.
"""

# Files a solver recipe keeps next to its model (read by the herd benchmark and the composition
# law without importing the training stack).
RESULTS_FILE = "solver_results.json"
PREDICTIONS_FILE = "eval_predictions.jsonl"
