"""conf/ is installed as the package `forecast.conf`: Hydra's `pkg://forecast.conf` needs this file."""
