"""trackformers.losses"""
