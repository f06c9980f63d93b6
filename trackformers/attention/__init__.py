"""trackformers.attention"""
