"""reasonlab.attacks"""
