"""trackformers.data"""
