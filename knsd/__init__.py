"""knsd: Stable Diffusion on Knative, a scale-to-zero GPU service that proves it scales."""

__version__ = "0.1.0"
