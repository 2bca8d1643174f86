"""Reports: figures (PNG) and Markdown/HTML documents."""

from jaxneurons.report.document import Report
from jaxneurons.report.explorer import ExplorerConfig, write_explorer
from jaxneurons.report.figures import curves, grouped_bars, heatmap, layer_profile, training_curve

__all__ = ["ExplorerConfig", "Report", "curves", "grouped_bars", "heatmap", "layer_profile", "training_curve",
           "write_explorer"]
