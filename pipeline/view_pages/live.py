"""The view's Live alerts page (alert_view.py)."""
from pipeline.alert_view import page

page("Live alerts")
