"""Backbones and their weights, layer groups and freezing, compute per layer group.

- :mod:`~ftcore.models.backbones`: the timm catalogue, where weights come from, the one model
  factory (:func:`~ftcore.models.backbones.build_model`, and
  :func:`~ftcore.models.backbones.meta_model` on the ``meta`` device);
  weights files are read and checked in the private ``_weights``;
- :mod:`~ftcore.models.layers`: layer groups (found in the private ``_groups``) and freezing;
- :mod:`~ftcore.models.compute`: forward FLOPs per layer group and the cost of a training step.

Imports only :mod:`ftcore.core` (and timm, torch).
"""
