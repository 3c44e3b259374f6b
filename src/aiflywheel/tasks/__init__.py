"""Tasks: each folder is one kind of AI feature on the shared loop (see core.task)."""
