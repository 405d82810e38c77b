"""Hydra plugin: forecast's config groups under `forecast/` in any Hydra app (`forecast/model: bilstm`)."""
