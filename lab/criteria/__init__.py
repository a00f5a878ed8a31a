"""The two criteria of Kang et al. (CVPR 2025), pure numpy/scipy/kneed over captured attention.

Input convention: per sample the capture gives ``image_attention[L, H, V]``: for the captured
query token, the softmax attention of text layer ``l``, head ``h`` restricted to the ``V``
image-token columns. Rows do not sum to 1 (the rest of the mass sits on text tokens).
``ImageLayout.to_grid`` reshapes it to ``maps[L, H, rows, cols]``.

* Criterion 1, attention sum (`image_sum`): ``S_img[l, h] = sum_v image_attention[l, h, v]``.
  The heads' ``S_img`` averaged over samples is sorted in descending order and the elbow of that
  curve (`elbow`) is the threshold; heads below it are out.
* Criterion 2, spatial entropy (`entropy`): ``B = relu(A - mean(A))`` of a head's 2D map ``A``;
  the connected components ``C_i`` of ``B > 0`` (8-connectivity by default) give
  ``p_i = mass(C_i) / mass(B)`` and ``H = -sum_i p_i ln p_i``. One compact blob gives 0; the
  more scattered the above-mean attention, the larger ``H``. ``inf`` when nothing survives.

Per-sample use is `lab.analysis.per_sample`, selection across samples `lab.analysis.across_samples`.
The choices (component weights, connectivity, elbow methods) are declared in utils/settings/choices.py.
"""

from lab.criteria.elbow import Elbow, elbow_threshold
from lab.criteria.entropy import (DEFAULT_RTOL, SpatialEntropyDetails, entropy_components,
                                  bottom_row_share, spatial_entropy, spatial_entropy_batch,
                                  spatial_entropy_details)
from lab.criteria.image_sum import excluded_list, image_attention_sum, layer_mask

__all__ = [
    "DEFAULT_RTOL", "Elbow", "SpatialEntropyDetails", "entropy_components",
    "bottom_row_share", "elbow_threshold", "excluded_list", "image_attention_sum", "layer_mask",
    "spatial_entropy", "spatial_entropy_batch", "spatial_entropy_details",
]
