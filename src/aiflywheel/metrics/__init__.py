"""Metric functions shared by tasks: bootstrap CIs, paired comparisons, per-task sets."""
