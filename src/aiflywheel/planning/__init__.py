"""Cost and capacity planning of a feature's versions (``capacity``)."""
