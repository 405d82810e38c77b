"""pipelines/ is installed as `forecast.pipelines`, the modules the console scripts run (forecast/apps.py)."""
