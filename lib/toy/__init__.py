"""ToyShift: procedural street scenes with controlled semantic and covariate shift.

One module per part of the world, imported by its own name (this package imports none of them):
:mod:`lib.toy.scenes` (``sample_scene``: layout and label map), :mod:`lib.toy.domains` (``Domain``,
``SOURCE_DOMAIN``, ``PRESETS``, ``sample_shifted_domain``, ``domain_from_prompt``),
:mod:`lib.toy.anomalies` (``TRAIN_FAMILIES``, ``TEST_FAMILIES``, ``FAMILY_ADE_INDEX``,
``sample_anomaly_mask``, ``place_anomaly``), :mod:`lib.toy.render` (``render``),
:mod:`lib.toy.effects` and :mod:`lib.toy.textures` (what the renderer draws with) and
:mod:`lib.toy.writers` (the datasets on disk). The ``procedural`` generation backend and the demo
build on them.
"""
