"""segflow's local engine: the imageseg, videoseg and PicWish APIs served with real offline models.

Importing the package is light; the models load on first use (see `segmenters.get_segmenter`).
"""

from __future__ import annotations

__all__: list[str] = []
