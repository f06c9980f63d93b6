"""Tracking metrics: exact TrackML score, double-majority / perfect / LHC efficiencies, fake
and duplicate rates, breakdowns, standard errors over events. All numpy, vectorised per
event."""

from trackformers.metrics.breakdown import binned_rate, efficiency_breakdowns, fake_rate_vs_eta
from trackformers.metrics.efficiency import (
    MatchingRules,
    Reconstructable,
    duplicate_rate,
    fake_rate,
    particle_matches,
)
from trackformers.metrics.event import (
    aggregate,
    evaluate_event,
    official_weights,
    particle_kinematics,
    track_table,
)
from trackformers.metrics.matching import TrackMatch, match_tracks
from trackformers.metrics.trackml import analyze_tracks, score_event, trackml_score
from trackformers.metrics.uncertainty import binomial_err, ratio_err

__all__ = [
    "MatchingRules",
    "Reconstructable",
    "TrackMatch",
    "aggregate",
    "analyze_tracks",
    "binned_rate",
    "binomial_err",
    "duplicate_rate",
    "efficiency_breakdowns",
    "evaluate_event",
    "fake_rate",
    "fake_rate_vs_eta",
    "match_tracks",
    "official_weights",
    "particle_kinematics",
    "particle_matches",
    "ratio_err",
    "score_event",
    "track_table",
    "trackml_score",
]
