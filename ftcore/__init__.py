"""ftcore: the compute behind the guided fine-tuning dashboard.

Public modules: :mod:`ftcore.config`, :mod:`ftcore.backbones`,
:mod:`ftcore.layers`, :mod:`ftcore.data`, :mod:`ftcore.training`,
:mod:`ftcore.metrics`, :mod:`ftcore.runs`, :mod:`ftcore.jobs`, and for the
training loop :mod:`ftcore.schedule`, :mod:`ftcore.monitor`,
:mod:`ftcore.augment`, :mod:`ftcore.device`, :mod:`ftcore.compute`. ftcore never
imports streamlit.
"""

__version__ = "0.1.0"
