"""Model zoo: a registry of classifiers that normalise their own [0, 1] inputs."""

from .registry import MODELS, create_model, register_model
from .normalize import Normalize, NormalizedClassifier
from . import lenet, resnet_cifar, wrn, mobilenetv2, torchvision_models  # noqa: F401  (registers)
from .features import FeatureExtractor, feature_names

__all__ = [
    "MODELS",
    "create_model",
    "register_model",
    "Normalize",
    "NormalizedClassifier",
    "FeatureExtractor",
    "feature_names",
]
