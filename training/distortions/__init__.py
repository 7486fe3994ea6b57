"""The distortion bank used by `pinet data synth`: 25 types x 5 levels.

``registry`` holds the records (name, coarse class, whether the seed matters) and
:func:`apply_distortion`; ``ops`` holds the pixel operations they apply.
"""

from pinet_training.distortions.registry import (DISTORTION_NAMES, DISTORTIONS, LEVELS, Distortion,
                                                 apply_distortion, distort_array, get_distortion)

__all__ = ["Distortion", "DISTORTIONS", "DISTORTION_NAMES", "LEVELS", "get_distortion",
           "distort_array", "apply_distortion"]
