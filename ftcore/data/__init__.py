"""Data intake: decoding, folder layouts, the audit, the decoded-image cache, uploads,
the split and datasets, augmentation, the demo data set.

- :mod:`~ftcore.data.images`: decoding any image file to RGB uint8;
- :mod:`~ftcore.data.scan`: folder layouts, junk, wrapper folders, data roots (nothing decoded);
- :mod:`~ftcore.data.audit`: every file read and decoded once; duplicates (private ``_duplicates``)
  and the report with its class summary (private ``_report``);
- :mod:`~ftcore.data.cache`: the decoded-image cache in the run store;
- :mod:`~ftcore.data.uploads`: browser uploads and zips, extracted safely into the store;
- :mod:`~ftcore.data.split`: the run's split, datasets, samplers, the demo data set;
- :mod:`~ftcore.data.augment`: augmentation presets.

Imports only :mod:`ftcore.core`.
"""
