"""The statsforecast peer of `quanyu bench demand`, run in its own environment (.venv-peers:
statsforecast needs pandas < 3). Reads daily series (unique_id, ds, y) from Parquet, forecasts
`horizon` days with AutoETS and CrostonOptimized, writes the forecasts and the wall times.

usage: python statsforecast_demand.py SERIES.parquet HORIZON OUT.parquet TIMES.json
"""

import json
import sys
import time

import pandas as pd
from statsforecast import StatsForecast
from statsforecast.models import AutoETS, CrostonOptimized

series_path, horizon, out_path, times_path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
series = pd.read_parquet(series_path)
series["ds"] = pd.to_datetime(series["ds"])
times = {}
frames = []
for name, model in (("AutoETS", AutoETS(season_length=7)), ("CrostonOptimized", CrostonOptimized())):
    started = time.perf_counter()
    forecast = StatsForecast(models=[model], freq="D", n_jobs=2).forecast(df=series, h=horizon)
    times[name] = round(time.perf_counter() - started, 2)
    frames.append(forecast.reset_index(drop=False).set_index(["unique_id", "ds"])[[name]])
pd.concat(frames, axis=1).reset_index().to_parquet(out_path)
with open(times_path, "w") as f:
    json.dump(times, f)
