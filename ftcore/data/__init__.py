"""Data intake: decoding, folder layouts, the audit, the decoded-image cache, uploads,
the split and datasets, augmentation, the demo data set.

Imports only :mod:`ftcore.core`.
"""
