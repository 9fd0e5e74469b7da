"""Architecture presets (timm style: one registry, name -> plain config dict).

Keys: conv_depth (number of conv SLL layers), channels (C, conv width after zero-padding
3 -> C), conv_inner (inner width of each conv SLL layer, i.e. its number of 3x3 filters),
linear_depth (number of linear SLL layers), linear_inner (inner width of each linear layer).
The image size and emb_dim are not part of a preset: they come from the data and the teacher.

The paper presets use conv_inner = 5: the public code's `--conv_size 5` is the conv layer's
inner width, and it is what makes the small model ~63.3M parameters (7 x 1024 x 8820 linear
weights + 20 x 5 x 45 x 9 conv weights), as the paper states.

`tiny` is the demo model (32x32 inputs -> 8 -> 2, D = 32 * 2 * 2 = 128, so emb_dim <= 128):
small enough that distilling a few hundred 32px images for a few epochs on one CPU core
takes seconds.
"""

from __future__ import annotations

PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(conv_depth=3, channels=32, conv_inner=16, linear_depth=2, linear_inner=128),
    "small": dict(conv_depth=20, channels=45, conv_inner=5, linear_depth=7, linear_inner=1024),
    "medium": dict(conv_depth=30, channels=60, conv_inner=5, linear_depth=10, linear_inner=2048),
    "large": dict(conv_depth=50, channels=90, conv_inner=5, linear_depth=10, linear_inner=2048),
    "xlarge": dict(conv_depth=70, channels=120, conv_inner=5, linear_depth=15, linear_inner=2048),
}
