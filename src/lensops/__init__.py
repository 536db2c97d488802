"""lensops: Ray-native MLOps for image models."""

__version__ = "0.1.0"
