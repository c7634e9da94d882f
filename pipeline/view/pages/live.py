"""The view's Live alerts page (app.py)."""
from pipeline.view.app import page

page("Live alerts")
