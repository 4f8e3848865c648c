"""The `segflow` command and everything that runs segflow on your own machine.

`segflow run` (the pipeline over local files), `segflow invoke` (a handler run here, or the deployed
function), the local-directory buckets and their presigned URLs, an FC-shaped context for local runs and
the previews. None of it ships to Function Compute: the layer (`segflow`) never imports this package.
"""

from __future__ import annotations
