"""reasonlab.training"""
