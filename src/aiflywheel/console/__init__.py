"""The product manager's console: pages over the store and the Task contract, mounted at
``/console`` of ``flywheel serve`` (``mount_console``); no task names, no CDN."""
