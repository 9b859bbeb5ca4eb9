"""presales-ws: the real-time speech backend of the presales meeting assistant."""

__version__ = "0.1.0"
