"""The view's Top households page (app.py)."""
from pipeline.view.app import page

page("Top households")
