"""Plots and event displays (matplotlib, Agg backend): efficiency vs pT / eta, fake rate,
x–y and r–z event displays, attention-mask and cluster views."""

from trackformers.viz.attention import mask_density, plot_attention, same_track_coverage
from trackformers.viz.event_display import event_display
from trackformers.viz.performance import plot_breakdown_bars, plot_efficiency, plot_fake_rate
from trackformers.viz.style import label_colours, save

__all__ = [
    "event_display",
    "label_colours",
    "mask_density",
    "plot_attention",
    "plot_breakdown_bars",
    "plot_efficiency",
    "plot_fake_rate",
    "same_track_coverage",
    "save",
]
