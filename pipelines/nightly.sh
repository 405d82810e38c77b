#!/usr/bin/env bash
# The nightly loop, once: fine-tune the champion on the latest data (registered as @candidate),
# let the promotion gate decide, then forecast with whichever version is @champion now.
#
#   MODEL=forecast-lstm DATA=/data/history.parquet OUT=/data/forecasts pipelines/nightly.sh
#
# MODEL: registered name; DATA: the long table (unique_id, ds, y); OUT: the forecasts' folder
# (as_of=<date>/forecast.parquet); AS_OF: the forecast's date (default: today, UTC);
# FINETUNE: more overrides for the fine-tune (default: 5 epochs); PY: the Python to run.
# Exit: 0 when the forecast was written (the gate may have kept the champion: exit 3 is not a
# failure here); any other code is the failing step's (docs/errors.md).
set -euo pipefail
: "${MODEL:?set MODEL, the registered model name}" "${DATA:?set DATA, the input table}"
OUT=${OUT:-forecasts}
AS_OF=${AS_OF:-today}
PY=${PY:-python}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck disable=SC2206  # FINETUNE is a list of overrides, split on spaces on purpose
FINETUNE=(${FINETUNE:-trainer.max_epochs=5})

echo "nightly: fine-tune models:/$MODEL@champion on $DATA"
"$PY" "$HERE/train.py" "init_from=models:/$MODEL@champion" data=file "data.path=$DATA" "${FINETUNE[@]}"

echo "nightly: promotion gate, $MODEL@candidate against @champion"
gate=0
"$PY" "$HERE/promote.py" "name=$MODEL" "input=$DATA" || gate=$?
if [[ $gate -ne 0 && $gate -ne 3 ]]; then
    exit "$gate"
fi

echo "nightly: forecast with models:/$MODEL@champion as of $AS_OF"
"$PY" "$HERE/batch_forecast.py" "model_uri=models:/$MODEL@champion" "input=$DATA" \
    "output='$OUT/as_of={as_of}/forecast.parquet'" "as_of=$AS_OF"
