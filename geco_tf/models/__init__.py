"""Models: generators, classifiers, the three-player discriminator, DeepDicomSort weights."""

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
