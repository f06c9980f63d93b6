"""Inference: a checkpoint -> a model on a device -> tracks of events, and its latency.

loader     checkpoint -> model on a device (``load_model``), its output names
settings   what else the run config decides: clustering, metric rules
events     the events an evaluation reads (a run's test split, given files)
forward    the eager forward in a chosen precision (``forward_batch``)
stream     batched eager inference over a stream of events (``infer_stream``)
predictor  per-event inference, CUDA graph per hit-count bucket (``Predictor``)
compiled   the encoder blocks' dense parts compiled (``CompiledForward``)
latency    per-event latency and memory of a checkpoint (``measure_latency``)
"""

from trackformers.inference.forward import AMP_DTYPES, amp_precision, forward_batch
from trackformers.inference.loader import LoadedModel, load_model, output_keys
from trackformers.inference.predictor import Predictor, Tracks, track_counts

__all__ = [
    "AMP_DTYPES",
    "LoadedModel",
    "Predictor",
    "Tracks",
    "amp_precision",
    "forward_batch",
    "load_model",
    "output_keys",
    "track_counts",
]
