"""geco-tf: Generative Editing via Convolutional Obscuring in TensorFlow/Keras 3.

The package follows the pipeline a user walks through:

* :mod:`geco_tf.data`       -- data in: the built-in simulator, DICOM/NIfTI ingestion,
  the dataset directory and its tf.data pipeline;
* :mod:`geco_tf.models`     -- generators, classifiers, discriminator, DeepDicomSort weights;
* :mod:`geco_tf.training`   -- the GECO adversarial model and the baseline;
* :mod:`geco_tf.evaluation` -- metrics, audits and the HTML report;
* :mod:`geco_tf.export`     -- SavedModel / TFLite export and de-artifacting of volumes.
"""

__version__ = "0.1.0"
