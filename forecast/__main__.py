"""`python -m forecast COMMAND [overrides]`: the pipelines without their console scripts."""

from forecast.apps import main

main()
