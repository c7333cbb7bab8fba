"""The SQLite run store, its records, and the comparison of a stored run's two models.

Imports only :mod:`ftcore.core`.
"""
