"""Model catalog, packaged encoders and their conversion."""
