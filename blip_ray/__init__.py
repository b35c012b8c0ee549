"""blip-ray: continual-learning benchmarks built around BLIP, scheduled by Ray."""

__version__ = "0.1.0"
