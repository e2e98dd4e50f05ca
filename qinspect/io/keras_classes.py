"""Which layer classes are Keras's own (tf_keras 2.x and Keras 3), so ``capture`` may rebuild and run them.

A config names its layer classes; TensorFlow rebuilds a class by that name only when Keras itself
provides it. Everything else (a user's class, ``Lambda`` whose code is stored in the file) is shown
by qinspect but never deserialized or run.

The list is the union of the Layer classes exported by ``keras.layers`` (Keras 3.15) and
``tf_keras.layers`` (2.21), minus the ones that hold or load code (``Lambda``, ``TFSMLayer``,
``JaxLayer``, ``FlaxLayer``, ``TorchModuleWrapper``) and abstract bases, plus the layers that
``keras.applications`` define for themselves (ConvNeXt's ``LayerScale`` and ``StochasticDepth``,
InceptionResNetV2's ``CustomScaleLayer``).
A wrapper (``Bidirectional``, ``TimeDistributed``, ``RNN``) is Keras's own only when what it wraps is.
"""

from __future__ import annotations

from typing import Any

KERAS_LAYER_CLASSES = frozenset({
    "Activation", "ActivityRegularization", "AdaptiveAveragePooling1D", "AdaptiveAveragePooling2D",
    "AdaptiveAveragePooling3D", "AdaptiveMaxPooling1D", "AdaptiveMaxPooling2D", "AdaptiveMaxPooling3D", "Add",
    "AdditiveAttention", "AlphaDropout", "Attention", "AugMix", "AutoContrast", "Average", "AveragePooling1D",
    "AveragePooling2D", "AveragePooling3D", "AvgPool1D", "AvgPool2D", "AvgPool3D", "BatchNormalization",
    "Bidirectional", "CategoryEncoding", "CenterCrop", "Concatenate",
    "ContrastLimitedAdaptiveHistogramEqualization", "Conv1D", "Conv1DTranspose", "Conv2D", "Conv2DTranspose",
    "Conv3D", "Conv3DTranspose", "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D", "Convolution1D",
    "Convolution1DTranspose", "Convolution2D", "Convolution2DTranspose", "Convolution3D", "Convolution3DTranspose",
    "Cropping1D", "Cropping2D", "Cropping3D", "CutMix", "Dense", "DenseFeatures", "DepthwiseConv1D",
    "DepthwiseConv2D", "Discretization", "Dot", "Dropout", "ELU", "EinsumDense", "Embedding", "Equalization",
    "Flatten", "GRU", "GRUCell", "GaussianDropout", "GaussianNoise", "GlobalAveragePooling1D",
    "GlobalAveragePooling2D", "GlobalAveragePooling3D", "GlobalAvgPool1D", "GlobalAvgPool2D", "GlobalAvgPool3D",
    "GlobalMaxPool1D", "GlobalMaxPool2D", "GlobalMaxPool3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
    "GlobalMaxPooling3D", "GroupNormalization", "GroupQueryAttention", "HashedCrossing", "Hashing", "Identity",
    "InputLayer", "IntegerLookup", "LSTM", "LSTMCell", "LayerNormalization", "LeakyReLU", "LocallyConnected1D",
    "LocallyConnected2D", "Masking", "MaxNumBoundingBoxes", "MaxPool1D", "MaxPool2D", "MaxPool3D", "MaxPooling1D",
    "MaxPooling2D", "MaxPooling3D", "Maximum", "MelSpectrogram", "Minimum", "MixUp", "MultiHeadAttention",
    "Multiply", "Normalization", "PReLU", "Permute", "RMSNormalization", "RNN", "RandAugment", "RandomBrightness",
    "RandomColorDegeneration", "RandomColorJitter", "RandomContrast", "RandomCrop", "RandomElasticTransform",
    "RandomErasing", "RandomFlip", "RandomGaussianBlur", "RandomGrayscale", "RandomHeight", "RandomHue",
    "RandomInvert", "RandomPerspective", "RandomPosterization", "RandomRotation", "RandomSaturation",
    "RandomSharpness", "RandomShear", "RandomTranslation", "RandomWidth", "RandomZoom", "ReLU", "RepeatVector",
    "Rescaling", "Reshape", "Resizing", "ReversibleEmbedding", "STFTSpectrogram", "SeparableConv1D",
    "SeparableConv2D", "SeparableConvolution1D", "SeparableConvolution2D", "SimpleRNN", "SimpleRNNCell", "Softmax",
    "Solarization", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "SpectralNormalization",
    "StackedRNNCells", "StringLookup", "Subtract", "TextVectorization", "ThresholdedReLU", "TimeDistributed",
    "UnitNormalization", "UpSampling1D", "UpSampling2D", "UpSampling3D", "ZeroPadding1D", "ZeroPadding2D",
    "ZeroPadding3D",
    # tf_keras call-graph records of TensorFlow functions and Keras 3 operations (no stored code)
    "TFOpLambda", "SlicingOpLambda", "KerasOp",
})  # fmt: skip

# Layers keras.applications define in their own modules (loadable by name from those modules).
APPLICATION_LAYERS = {
    "LayerScale": ("tf_keras.src.applications.convnext", "keras.src.applications.convnext"),
    "StochasticDepth": ("tf_keras.src.applications.convnext", "keras.src.applications.convnext"),
    "CustomScaleLayer": ("tf_keras.src.applications.inception_resnet_v2",
                         "keras.src.applications.inception_resnet_v2"),
}

# Augmentation layers that pass their input through unchanged at inference (each checked against tf_keras
# 2.21 and Keras 3.15 with training=False): the model a DPU runs has none of them. RandomCrop is not one
# (tf_keras crops to its size at inference).
INACTIVE_AT_INFERENCE = frozenset({
    "RandomFlip", "RandomRotation", "RandomZoom", "RandomContrast", "RandomTranslation", "RandomBrightness",
    "RandomHeight", "RandomWidth", "RandomGrayscale", "RandomHue", "RandomSaturation", "RandomSharpness",
    "RandomShear", "RandomColorJitter", "RandomColorDegeneration", "RandomPosterization", "RandomInvert",
    "RandomErasing", "RandomGaussianBlur", "RandomPerspective", "RandomElasticTransform", "AugMix", "CutMix",
    "MixUp", "RandAugment",
})

_BASE_CONFIG_KEYS = {"name", "trainable", "dtype"}
_APPLICATION_CONFIG_KEYS = {
    "LayerScale": _BASE_CONFIG_KEYS | {"init_values", "projection_dim"},
    "StochasticDepth": _BASE_CONFIG_KEYS | {"drop_path_rate"},
    "CustomScaleLayer": _BASE_CONFIG_KEYS | {"scale"},
}

# Keys under which a wrapper's config holds the layer(s) it wraps.
_WRAPPED_KEYS = ("layer", "cell", "forward_layer", "backward_layer", "cells")


def _class_name(layer_cfg: dict[str, Any]) -> str:
    return str(layer_cfg.get("class_name", "")).rsplit(">", 1)[-1]


def _module_is_keras(layer_cfg: dict[str, Any]) -> bool:
    """A Keras 3 config names the module a class lives in; a user's module is not Keras's own."""
    module = layer_cfg.get("module")
    if module is None:
        return True  # Keras 2 configs name no module
    return str(module).split(".", 1)[0] in ("keras", "tf_keras")


def is_keras_own(layer_cfg: dict[str, Any]) -> bool:
    """True when the layer (and whatever it wraps) is a class Keras itself provides."""
    name = _class_name(layer_cfg)
    registered = ">" in str(layer_cfg.get("class_name", "")) or ">" in str(layer_cfg.get("registered_name") or "")
    cfg = layer_cfg.get("config")
    cfg = cfg if isinstance(cfg, dict) else {}
    if name in APPLICATION_LAYERS:
        # Only keras.applications define these; a user's class of the same name would differ in its
        # config, so the config must be exactly the application layer's.
        return _module_is_keras(layer_cfg) and set(cfg) <= _APPLICATION_CONFIG_KEYS[name]
    if name not in KERAS_LAYER_CLASSES or registered or not _module_is_keras(layer_cfg):
        return False
    for key in _WRAPPED_KEYS:
        inner = cfg.get(key)
        for sub in inner if isinstance(inner, list) else [inner]:
            if isinstance(sub, dict) and "class_name" in sub and not is_keras_own(sub):
                return False
    return True
