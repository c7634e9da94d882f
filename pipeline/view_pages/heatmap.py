"""The view's Heatmap page (alert_view.py)."""
from pipeline.alert_view import page

page("Heatmap")
