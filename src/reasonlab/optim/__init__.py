"""reasonlab.optim"""
