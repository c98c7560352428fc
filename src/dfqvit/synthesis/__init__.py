"""Calibration-image synthesis: one optimisation loop; methods are loss terms + a schedule."""
from .loop import SynthesisOptions, SynthesisResult, synthesize_images
from .methods import METHODS, Method, get_method, register_method

__all__ = ["METHODS", "Method", "SynthesisOptions", "SynthesisResult", "get_method", "register_method",
           "synthesize_images"]
