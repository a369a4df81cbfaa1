"""geco_tf.export"""
