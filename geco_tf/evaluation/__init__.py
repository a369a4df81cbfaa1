"""geco_tf.evaluation"""
