"""Peer for `quanyu bench serving`: a bare FastAPI app (one uvicorn process, no Ray) around the
same predictors and the same handlers, request models and validation as the Serve app, so the
difference is what Serve and HAProxy add: the ingress hop, the key check, the replica's request path.

Run: MLFLOW_TRACKING_URI=… uvicorn benchmarks.peers.bare_fastapi:app --port P"""

import os

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from models.demand.api import ForecastRequest, forecast as answer_forecast
from models.matching.api import RecommendRequest, recommend as answer_recommend
from serving.families import FamilyModel

app = FastAPI()
_models = {f: FamilyModel(f, os.environ["MLFLOW_TRACKING_URI"], os.environ.get("QUANYU_ALIAS", "champion"))
           for f in ("demand", "matching")}
for _model in _models.values():
    _model.check()


@app.post("/v1/demand/forecast")
def forecast(request: ForecastRequest):
    status, body = answer_forecast(_models["demand"].current, request.model_dump(mode="json"))
    return JSONResponse(body, status_code=status)


@app.post("/v1/matching/recommend")
def recommend(request: RecommendRequest):
    status, body = answer_recommend(_models["matching"].current, request.model_dump(mode="json"))
    return JSONResponse(body, status_code=status)
