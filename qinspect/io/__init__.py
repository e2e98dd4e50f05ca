"""Files in and out: Keras model files, HDF5 captures, Vitis artefacts. No Qt, no TensorFlow."""
