"""The local replay of the real 2024 results site: the test bed, the demo and the benchmark target."""
from .faults import FaultPlan
from .server import Replay, ReplayThread, serve_forever

__all__ = ["FaultPlan", "Replay", "ReplayThread", "serve_forever"]
