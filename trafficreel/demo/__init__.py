"""The one-command demo: the whole pipeline with two recorded sample services, on one machine."""

from ._run import DemoResult, run_demo

__all__ = ["DemoResult", "run_demo"]
