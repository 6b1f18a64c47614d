"""reasonlab.skills"""
