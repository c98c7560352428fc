"""Image sources: the digits split of the embedded default, ImageNet-layout folders, Gaussian noise."""
from .digits import digits_split
from .folder import ImageFolderDataset, load_folder_tensors
from .noise import gaussian_noise_images

__all__ = ["ImageFolderDataset", "digits_split", "gaussian_noise_images", "load_folder_tensors"]
