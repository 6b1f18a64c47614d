"""reasonlab.data"""
