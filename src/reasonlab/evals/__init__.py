"""reasonlab.evals"""
