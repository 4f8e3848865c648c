"""segflow: image and video segmentation on Alibaba Cloud OSS uploads.

The package is the Function Compute layer: signing, the vision API client, the action catalogue and
input validation, events, storage and job records. It imports nothing heavy at import time.
"""

from __future__ import annotations

__version__ = "0.1.0"
