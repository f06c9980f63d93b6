"""trackformers.attention: backend registry (base.py), plan builders (plans.py), backends.

Importing this package registers every backend: dense, flex, windowed and, when
trackformers/attention/fused.py is present, fused.
"""

import importlib.util

from trackformers.attention import dense, flex  # noqa: F401  (register dense, flex, windowed)
from trackformers.attention.base import (
    AttentionBackend,
    AttentionPlan,
    Capabilities,
    available,
    build,
    register,
)
from trackformers.attention.plans import cluster_plan, full_plan, window_plan

if importlib.util.find_spec("trackformers.attention.fused") is not None:
    from trackformers.attention import fused  # noqa: F401  (registers "fused")

__all__ = [
    "AttentionBackend",
    "AttentionPlan",
    "Capabilities",
    "available",
    "build",
    "register",
    "full_plan",
    "cluster_plan",
    "window_plan",
]
