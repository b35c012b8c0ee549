"""The supervised task loop: the paper's training protocol over a task sequence."""

from blip_ray.supervised.loop import LoopState, NonFiniteLossError, TrainSettings, run_sequence

__all__ = ["LoopState", "NonFiniteLossError", "TrainSettings", "run_sequence"]
