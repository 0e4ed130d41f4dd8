"""avbench: a fair, fast harness for comparing audio-visual fusion strategies on frozen features."""

__version__ = "0.1.0"
