"""The ``geco-tf`` command line (installed as :mod:`geco_tf_cli`)."""
