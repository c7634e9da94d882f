"""The view's Heatmap page (app.py)."""
from pipeline.view.app import page

page("Heatmap")
