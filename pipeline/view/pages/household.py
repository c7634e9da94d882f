"""The view's Household page (app.py)."""
from pipeline.view.app import page

page("Household")
