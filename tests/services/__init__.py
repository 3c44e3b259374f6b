"""Throwaway services the tests start themselves (PostgreSQL; nginx for replicas)."""
