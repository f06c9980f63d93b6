"""trackformers.metrics"""
