"""The loop shared by every task: the run lifecycle (and, as it grows, the task contract)."""
