"""Models: one network per file (MONAI-style), each with documented constructor arguments.

Generators ``unet.py`` (the paper's core), ``residual.py``, ``multi_residual.py`` (named by
``generators.build_generator``); classifiers ``dds_classifier.py`` and ``maxpool_classifier.py``
on ``backbone.py`` (named by ``classifiers.build_classifier``); ``discriminator.py`` (three-player
game); ``spectral.py`` (the second adversary); ``band.py`` (the output band); ``deepdicomsort.py``
(the published weights); ``normalization.py`` (fused batch and instance norm).
"""

from geco_tf.models.classifiers import DDSClassifier, MaxPoolClassifier, build_classifier, choose_padding
from geco_tf.models.discriminator import Discriminator
from geco_tf.models.generators import (
    MultiResidualGenerator,
    ResidualGenerator,
    UNetGenerator,
    build_generator,
)

__all__ = [
    "DDSClassifier",
    "Discriminator",
    "MaxPoolClassifier",
    "MultiResidualGenerator",
    "ResidualGenerator",
    "UNetGenerator",
    "build_classifier",
    "build_generator",
    "choose_padding",
]
