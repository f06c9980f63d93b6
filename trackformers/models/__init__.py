"""trackformers.models"""
