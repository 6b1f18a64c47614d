"""reasonlab.reasoning"""
