"""geco_tf.training"""
