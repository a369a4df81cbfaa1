"""Batch normalisation in a classifier whose input keeps changing: momentum and "precise BN".

A batch-norm layer normalises with the statistics of the batch while training and with moving
averages of them at inference. Two things in this package make those averages wrong:

* a short from-scratch run (baseline, audit): with Keras' momentum 0.99 the moving variance
  still carries ~20% of its initial 1.0 after 150 steps while the true variances of the first
  layers are ~0.005, so inference predicts one class although training-mode accuracy is 95%;
* the GECO game: the generator changes the classifier's input at every step, so the moving
  averages mix the statistics of many generators. Measured on the built-in data: the co-trained
  classifier was 52% right on G(val) with batch statistics, and predicted a single class
  (25%, chance) with its moving averages, so the co-trained accuracy, the paper's "Acc.", read as
  perfect removal while it was not.

The remedy for both is "precise BN" (Wu and Johnson, "Rethinking 'Batch' in BatchNorm", 2021):
after training, set every layer's moving statistics to the mean of its batch statistics over one
pass of the data the model is meant for (for GECO: the current generator's output on training
images). Only the statistics change, not a weight.
"""

from __future__ import annotations

import keras


def batch_norm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """Every BatchNormalization layer inside ``model`` (nested layers included)."""
    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


def set_batch_norm_momentum(model: keras.Model, momentum: float, synchronized: bool = False) -> None:
    """Set the moving-average momentum of every batch-norm layer in ``model``; ``synchronized``
    computes batch statistics over the global batch when a ``tf.distribute`` strategy splits it
    over replicas (N replicas then normalise like one device)."""
    for layer in batch_norm_layers(model):
        layer.momentum = momentum
        layer.synchronized = synchronized


class PreciseBatchNorm:
    """Precise BN fed one batch at a time: after ``n`` calls of :meth:`update`, every layer's
    moving statistics are the mean of its batch statistics over those ``n`` batches.

    One pass over generated images can then recalibrate several networks (the co-trained
    classifier and the spectral adversary) without running the generator once per network.
    """

    def __init__(self, model: keras.Model, norms: list[keras.layers.BatchNormalization] | None = None) -> None:
        self.model = model
        self.norms = batch_norm_layers(model) if norms is None else norms
        self.batches = 0

    def update(self, images) -> None:
        """Fold the batch statistics of ``model(images)`` into the running mean (eagerly: the
        momentum changes with every batch)."""
        self.batches += 1
        saved = [norm.momentum for norm in self.norms]
        try:
            for norm in self.norms:
                norm.momentum = 1.0 - 1.0 / self.batches  # running mean over batches; the first replaces
            self.model(images, training=True)
        finally:
            for norm, momentum in zip(self.norms, saved):
                norm.momentum = momentum


def recalibrate_batch_norm(model: keras.Model, norms: list[keras.layers.BatchNormalization], dataset) -> int:
    """Set each layer's moving statistics to the mean of its batch statistics over ``dataset``
    (batches of ``(images, anything)``), in one forward pass in training mode. Dropout and the
    weights are untouched in effect (training-mode calls update only the BN statistics here).
    Returns the number of batches used."""
    precise = PreciseBatchNorm(model, norms)
    for images, _ in dataset:
        precise.update(images)
    return precise.batches
