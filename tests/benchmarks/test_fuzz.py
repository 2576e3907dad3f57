"""`quanyu bench fuzz` reads schemathesis' event stream: its summary must count what the run did."""

from __future__ import annotations

import json

from benchmarks.fuzz import summarise


def _finished(statuses: list[int], failed: list[str]) -> dict:
    """A ScenarioFinished event shaped as schemathesis 4.32 writes it (trimmed from a real run)."""
    ids = [f"case-{i}" for i in range(len(statuses))]
    return {"ScenarioFinished": {"id": "s", "phase": "coverage", "status": "failure" if failed else "success",
                                 "recorder": {
        "label": "POST /v1/location/invocations",
        "cases": {i: {"value": {}} for i in ids},
        "interactions": {i: {"request": {"method": "POST", "uri": "http://127.0.0.1/v1/location/invocations"},
                             "response": {"status_code": s, "elapsed": 0.01}} for i, s in zip(ids, statuses)},
        "checks": {ids[0]: [{"name": "not_a_server_error", "status": "success"},
                            *({"name": name, "status": "failure"} for name in failed)]}}}}


def test_the_summary_counts_cases_statuses_server_errors_and_failed_checks(tmp_path):
    events = [{"Initialize": {"command": "st run"}}, _finished([200, 422, 422], []),
              {"ScenarioFinished": {"id": "t", "recorder": {"label": "GET /healthz"}}},  # no requests made
              _finished([500, 404], ["positive_data_acceptance"]), {"EngineFinished": {}}]
    stream = tmp_path / "events.ndjson"
    stream.write_text("\n".join(json.dumps(e) for e in events) + "\n")
    summary = summarise(stream)
    assert summary["cases"] == 5 and summary["responses"] == 5
    assert summary["statuses"] == {"200": 1, "404": 1, "422": 2, "500": 1} and summary["server_errors"] == 1
    assert summary["failures_by_check"] == {"positive_data_acceptance": 1} and summary["failures"] == 1
