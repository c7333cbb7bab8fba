"""Backbones and their weights, layer groups and freezing, compute per layer group.

Imports only :mod:`ftcore.core` (and timm, torch).
"""
