"""stn-core: 3D Morphable Models as Spatial Transformer Networks in PyTorch."""

__version__ = "0.1.0"
