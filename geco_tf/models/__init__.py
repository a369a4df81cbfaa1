"""geco_tf.models"""
