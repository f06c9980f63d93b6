"""trackformers.cluster"""
