"""The view's Top households page (alert_view.py)."""
from pipeline.alert_view import page

page("Top households")
