"""Inside a sweep job: reattach to the Optuna trial the sweeper created for it (`forecast.trials`)."""

from __future__ import annotations

from forecast.trials import trial_from_config

__all__ = ["trial_from_config"]
