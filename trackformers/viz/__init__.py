"""trackformers.viz"""
