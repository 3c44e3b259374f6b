"""Insight mining over feedback, corrections and handoffs (``topics``)."""
