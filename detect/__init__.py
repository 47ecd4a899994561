"""Pipeline glue: data layer, the `python -m detect.run` entry point, ensemble and outputs.

``from detect import Detector`` is imported lazily (module ``__getattr__``): every entry point
imports this package, and the detector pulls in the networks.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Detector"]


def __getattr__(name: str) -> Any:
    if name == "Detector":
        from detect.detector import Detector

        return Detector
    raise AttributeError(f"module 'detect' has no attribute {name!r}")
