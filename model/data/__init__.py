"""Training data: the procedural shapes world (with captions and a frame-only detector for
evaluation) and a folder of operators' own captioned clips."""
