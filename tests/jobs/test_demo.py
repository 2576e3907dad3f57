"""`quanyu demo` (what `make demo` runs) ends with a location champion and a planner's page that
shows picks: issue 21's bar, in a real headless Chromium against the server the demo left running.

The demo's default brand is the `chain` scale; this test runs the demo on a copy of the session's
chain lake (generated and merged once for the location quality tests) with the location family
only, so it checks the demo's path (validate, retrain, gate, detach, the page) without training
demand and matching on 600 stores a second time. `make demo` itself trains all three (README)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml

from tests.conftest import copy_lake, free_port, listening_addresses
from tests.serving.test_planner import Planner, browser  # noqa: F401  (the fixture)


@pytest.mark.heavy
def test_the_demo_ends_with_a_location_champion_and_picks_on_the_planner_page(chain_lake, browser, tmp_path):  # noqa: F811
    lake = copy_lake(chain_lake, tmp_path / "lake", zones=("raw",)).root
    (tmp_path / "retrain.yaml").write_text(yaml.safe_dump({"families": ["location"]}))
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in ("QUANYU_API_KEYS", "QUANYU_ADMIN_KEYS", "RAY_ADDRESS",
                                                             "MLFLOW_TRACKING_URI")}
    env["QUANYU_HOME"] = str(home)
    quanyu = str(Path(sys.executable).parent / "quanyu")
    port = free_port()
    try:
        demo = subprocess.run([quanyu, "demo", "--lake", str(lake), "--port", str(port), "--retrain-config",
                               str(tmp_path / "retrain.yaml")], env=env, capture_output=True, text=True, timeout=600)
        assert demo.returncode == 0, demo.stdout + demo.stderr
        out = demo.stdout
        assert "1/3 lake already at" in out, out
        assert "2/3 the daily retrain (validate and merge every new day, train location, gate, promote)" in out, out
        assert re.search(r"location +v1 +spearman [\d.]+ .* promoted", out) and "quanyu-location v1" in out, out
        assert "demand    no champion: not one of the retrain's families" in out, out
        assert f"planner's page  http://127.0.0.1:{port}/planner" in out, out

        assert listening_addresses(port) == {"127.0.0.1"}  # the API on loopback unless told otherwise
        # the demo serves behind HAProxy (`quanyu serve`'s default where it is installed), which
        # refuses a request head over its 16 KB buffer (issue 19: a 64 MB header grew Serve's proxy to 1 GB)
        assert (home / "haproxy").is_symlink()
        big = requests.get(f"http://127.0.0.1:{port}/healthz", headers={"X-Big": "a" * 20_000}, timeout=10)
        assert big.status_code == 400, (big.status_code, big.text[:200])
        key = (home / "api_key").read_text().strip()
        planner = Planner(browser, f"http://127.0.0.1:{port}/planner", key=key)
        try:
            planner.ask("Hangzhou", 3, min_distance_km=1)
            rows = planner.page.locator("#picks tbody tr.pick-row")
            rows.nth(2).wait_for()
            assert rows.count() == 3 and planner.page.locator("svg#map g.pick").count() == 3
            assert "Model version 1" in planner.page.locator("#provenance").inner_text()
            assert not planner.errors
            planner.shot("demo-picks.png")
        finally:
            planner.close()
    finally:
        stopped = subprocess.run([quanyu, "serve", "stop"], env=env, capture_output=True, text=True, timeout=120)
    assert stopped.returncode == 0 and "stopped the server" in stopped.stdout
