"""Hit→track assignment: GPU DBSCAN (Triton / torch), argmax for classifiers, sklearn references.

The methods are the rows of ``methods.METHODS`` (name -> implementation and capabilities);
``pipeline`` goes from model outputs to track labels with one of them.
"""

from trackformers.cluster.argmax import argmax_assign
from trackformers.cluster.components import connected_components
from trackformers.cluster.cpu import dbscan_cpu, hdbscan_cpu
from trackformers.cluster.gpu_dbscan import dbscan, dbscan_from_graph, radius_graph
from trackformers.cluster.local_dbscan import (
    dbscan_in_plan,
    neighbourhood_plan,
    plan_radius_graph,
    ranges_radius_graph,
)
from trackformers.cluster.methods import METHODS, ClusterMethod, cluster_hits, method
from trackformers.cluster.pipeline import (
    ClusterConfig,
    assign_tracks,
    clustering_input,
    split_events,
    track_list,
)

__all__ = [
    "METHODS",
    "ClusterConfig",
    "ClusterMethod",
    "assign_tracks",
    "clustering_input",
    "track_list",
    "argmax_assign",
    "cluster_hits",
    "connected_components",
    "dbscan",
    "dbscan_cpu",
    "dbscan_from_graph",
    "dbscan_in_plan",
    "hdbscan_cpu",
    "method",
    "neighbourhood_plan",
    "plan_radius_graph",
    "ranges_radius_graph",
    "radius_graph",
    "split_events",
]
