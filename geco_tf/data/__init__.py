"""Data in: the built-in simulator, DICOM/NIfTI ingestion, the dataset directory, tf.data."""
