"""qinspect: see where and why int8 quantization for Xilinx/AMD DPUs hurts a Keras model."""

__version__ = "0.1.0"
