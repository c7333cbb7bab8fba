"""The product's vocabulary: errors, configuration, typed events and run records, enums, metrics.

Imports nothing else of ftcore; every other package may import it.
"""
