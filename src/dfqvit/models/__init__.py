"""Model loading, the embedded tiny default, and the attention access points."""
from .attention import ObservableAttention, find_blocks, make_observable
from .loading import KNOWN_MODELS, LoadedModel, load_model, load_model_config, parse_model_args, patch_pixels
from .tiny import TINY_MODEL_NAME, build_tiny_vit, load_tiny_default

__all__ = [
    "KNOWN_MODELS",
    "LoadedModel",
    "ObservableAttention",
    "TINY_MODEL_NAME",
    "build_tiny_vit",
    "find_blocks",
    "load_model",
    "load_model_config",
    "parse_model_args",
    "patch_pixels",
    "load_tiny_default",
    "make_observable",
]
