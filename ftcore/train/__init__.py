"""Training: ``fit`` with callbacks, learning-rate schedules, per-group monitoring, and the
two-model experiment (frozen baseline and fine-tuned).

Imports :mod:`ftcore.core`, :mod:`ftcore.models`, :mod:`ftcore.data` and :mod:`ftcore.accel`.
"""
