"""How a run is executed: the local process executor and the worker entry.

Imports :mod:`ftcore.core`, :mod:`ftcore.train` and :mod:`ftcore.runs`.
"""
