"""reasonlab.peft"""
