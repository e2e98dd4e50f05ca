"""The only place that imports TensorFlow: runs a Keras model and writes a capture."""
