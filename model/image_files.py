"""Which files are images: the suffixes the loaders and the batch tool pick up.

Apart from `model.data` (which imports TensorFlow) so that the batch tool can
find images, and answer `--help`, without that import.
"""

# What model.preprocessing's decode_image reads.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif"})
