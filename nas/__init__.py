"""Hardware-aware neural architecture search.

`import nas` is light: heavy and optional dependencies (torch, optuna, plotly, and later ray,
openvino, tensorrt) are imported by the modules that use them, when they are used.
"""

__version__ = "0.1.0"
