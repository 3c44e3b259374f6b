"""Starter recipes written by `flywheel init --template NAME`."""
