"""Spacetime's model: a spacetime-patch video DiT, its text encoder, VAE, sampler and pipeline.

Entry points: `model.pipeline.load_pipeline` (serving, see docs/contracts.md), the Training API in
docs/contracts.md (`TextToVideoPipeline.from_preset`, `model.sampling.flow_matching_loss`, ...),
and `model.presets.PRESETS`. docs/model.md describes the architecture.
"""
