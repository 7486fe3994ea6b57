"""Camera workflows built on the torch-free scorer: burst best-shot (`pinet best`), video frame
scoring (`pinet score clip.mp4`) and the self-contained HTML report (`pinet report`).

Imports pinet_runtime and never torch; PyAV (the `video` extra) loads only to read a video.
"""

# Burst defaults, here so the CLI can show them without importing numpy (docs/camera.md has the
# measurement behind the distance).
DEFAULT_GAP_SECONDS = 2.0
DEFAULT_MAX_DISTANCE = 14
