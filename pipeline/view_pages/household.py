"""The view's Household page (alert_view.py)."""
from pipeline.alert_view import page

page("Household")
