"""nodeprobe: hooked BERT for node- and head-level specialization analyses."""

from nodeprobe.errors import NodeprobeError

__all__ = ["NodeprobeError"]
__version__ = "0.1.0"
