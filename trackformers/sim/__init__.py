"""trackformers.sim"""
