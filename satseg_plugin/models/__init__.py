"""Torch models, losses and the SatSeg model file format (QGIS-free).

Modules:
    - :mod:`.registry`: architecture/encoder names and :func:`~.registry.build_model` (smp, random init),
      :func:`~.registry.input_multiple` (the size inputs are padded to).
    - :mod:`.losses`: focal + soft Dice loss with an ignore mask.
    - :mod:`.checkpoint`: safetensors model files with :class:`~.checkpoint.ModelMetadata`; loading never
      unpickles.
    - :mod:`.schema`: the model header schema, checked before anything is built from a file.
    - :mod:`.nets`: SatSeg's own networks (ClusterNet, the scene classifier, the window autoencoder).

Nothing is imported here: torch and segmentation-models-pytorch load only when a submodule that needs
them is imported, so QGIS starts fast and a missing package gives a clear message.
"""
