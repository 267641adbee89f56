"""seglib: the thin library behind the seglib studies report.

Modules are imported lazily by their users (``import seglib.nn.unet``); importing
``seglib`` itself has no side effects and pulls in no heavy dependency.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
