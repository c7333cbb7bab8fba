"""ftcore: the compute behind the guided fine-tuning dashboard.

The names below are the public API that the pages, ``app.py`` and the CLI
use. They are loaded on first use (PEP 562 module ``__getattr__``), so
``import ftcore`` is cheap and torch and timm are imported only when a name
that needs them is touched.

Packages, in layer order (each imports only those before it; see
``tests/test_layering.py``):

- :mod:`ftcore.core`: errors, configuration, typed events and run records, enums, metrics;
- :mod:`ftcore.models`: backbones and weights, layer groups and freezing, compute per group;
- :mod:`ftcore.data`: decoding, layouts, audit, decoded-image cache, uploads, split, augmentation;
- :mod:`ftcore.accel`: BatchNorm folding, frozen prefix, CPU kernels, device choice;
- :mod:`ftcore.runs`: the SQLite run store and the comparison of a run's two models;
- :mod:`ftcore.train`: ``fit`` with callbacks, schedules, the two-model experiment;
- :mod:`ftcore.jobs`: executing runs (the executor interface, local worker processes, the store writer);
- :mod:`ftcore.cli`: ``python -m ftcore``.

ftcore never imports streamlit.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_API = {
    # core
    "FtcoreError": "ftcore.core.errors", "ConfigError": "ftcore.core.errors", "DatasetError": "ftcore.core.errors",
    "BackboneError": "ftcore.core.errors", "WeightsError": "ftcore.core.errors",
    "RunStoreError": "ftcore.core.errors", "TrainingError": "ftcore.core.errors",
    "RunConfig": "ftcore.core.config", "BackboneConfig": "ftcore.core.config", "FreezeConfig": "ftcore.core.config",
    "DataConfig": "ftcore.core.config", "TrainConfig": "ftcore.core.config",
    "DEFAULT_BACKBONE": "ftcore.core.config", "AUGMENT_PRESETS": "ftcore.core.config",
    "CLASS_BALANCE": "ftcore.core.config", "DEVICES": "ftcore.core.config",
    "EARLY_STOPPING_METRICS": "ftcore.core.config", "SECTIONS": "ftcore.core.config",
    "FieldSpec": "ftcore.core.fields", "field_spec": "ftcore.core.fields", "field_specs": "ftcore.core.fields",
    "default_store_root": "ftcore.core.paths",
    "RunStatus": "ftcore.core.records", "ModelRole": "ftcore.core.records", "RunFacts": "ftcore.core.records",
    "ModelFacts": "ftcore.core.records", "PrefixDecision": "ftcore.core.records", "StepCost": "ftcore.core.records",
    "EvalResult": "ftcore.core.records", "ExperimentResult": "ftcore.core.records",
    "StepEvent": "ftcore.core.events", "EpochEvent": "ftcore.core.events", "LayerStats": "ftcore.core.events",
    # models
    "list_backbones": "ftcore.models.backbones", "describe_backbone": "ftcore.models.backbones",
    "check_weights_file": "ftcore.models.backbones", "resolve_weights": "ftcore.models.backbones",
    "HEAD": "ftcore.models.layers", "describe_layer_groups": "ftcore.models.layers",
    "trainable_group_names": "ftcore.models.layers",
    "describe_compute": "ftcore.models.compute", "step_cost": "ftcore.models.compute",
    # data
    "audit_dataset": "ftcore.data.audit", "data_roots": "ftcore.data.scan",
    "write_demo_dataset": "ftcore.data.split", "scan_layout": "ftcore.data.split",
    "MAX_UPLOAD_BYTES": "ftcore.data.uploads", "MAX_UPLOAD_FILES": "ftcore.data.uploads",
    "extract_zip": "ftcore.data.uploads", "save_uploaded_files": "ftcore.data.uploads",
    # accel
    "device_summary": "ftcore.accel",
    # runs
    "RunStore": "ftcore.runs.store", "RunRecord": "ftcore.runs.store", "compare_run": "ftcore.runs.compare",
    # train
    "group_peak_lrs": "ftcore.train.schedule", "lr_schedule": "ftcore.train.schedule",
    # jobs
    "run_experiment": "ftcore.jobs.writer", "StoreWriter": "ftcore.jobs.writer", "Executor": "ftcore.jobs.executor",
    "LocalExecutor": "ftcore.jobs.local", "start_run": "ftcore.jobs.local", "cancel_run": "ftcore.jobs.local",
    "refresh": "ftcore.jobs.local", "latest_active_run": "ftcore.jobs.local", "run_worker": "ftcore.jobs.worker",
}

__all__ = sorted(_API)


def __getattr__(name: str):
    """Load a public name from its module on first use (PEP 562)."""
    try:
        module = _API[name]
    except KeyError:
        raise AttributeError(f"module 'ftcore' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
