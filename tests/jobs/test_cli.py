"""The `quanyu` CLI: every data command end to end, and clear messages (never a traceback) for
what a user gets wrong."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.cli import main as cli_main
from jobs.runtime import Runtime, ray_temp_dir

VENV_BIN = Path(sys.executable).parent


def run(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as done:
        cli_main(args)
    out = capsys.readouterr()
    return done.value.code, out.out + out.err


def test_generate_validate_merge_describe(tmp_path, ray_session, capsys):
    lake = str(tmp_path / "lake")
    code, out = run(["data", "generate", "--scale", "tiny", "--days", "40", "--seed", "5", "--lake", lake], capsys)
    assert code == 0 and "generated tiny lake" in out and "2025-01-01 … 2025-02-09" in out
    code, out = run(["data", "validate", "--lake", lake], capsys)
    assert code == 0 and "validation clean" in out
    code, out = run(["data", "merge", "--lake", lake], capsys)
    assert code == 0 and "merged 40 day(s)" in out
    raw, curated = [int(x.replace(",", "")) for x in out.split("units net raw ")[1].split(";")[0].split(" = curated ")]
    assert raw == curated > 0
    code, out = run(["data", "merge", "--lake", lake, "--date", "2025-01-10"], capsys)
    assert code == 0 and "merged 1 day(s)" in out
    code, out = run(["data", "describe", "--lake", lake, "--json"], capsys)
    info = json.loads(out)
    tables = {(t["zone"], t["table"]): t for t in info["tables"]}
    assert tables[("curated", "demand_daily")]["partitions"] == 40
    assert 0 < info["oneid"]["online"]["member_share"] < 1
    code, out = run(["data", "describe", "--lake", lake], capsys)
    assert code == 0 and "OneID match rates" in out
    # 2025-01-01 … 2025-02-09 is a Wednesday … a Sunday: Monday weeks end whole, Sunday weeks do not
    assert [w["week_of"] for w in info["weeks"]] == ["2025-01-13", "2025-01-20", "2025-01-27", "2025-02-03"]
    assert all(w["days"] == 7 and w["units_net"] > 0 for w in info["weeks"]) and info["currency"] == "CNY"
    (tmp_path / "lake" / "settings.yaml").write_text("week_start: sunday\ncurrency: EUR\n")
    code, out = run(["data", "describe", "--lake", lake], capsys)
    assert code == 0 and "(starting sunday" in out and "week of 2025-02-09" in out and "(1 of 7 days in the lake)" in out
    assert " EUR" in out


def test_generate_refuses_to_overwrite_a_lake(tiny_lake, capsys):
    code, out = run(["data", "generate", "--lake", str(tiny_lake.root)], capsys)
    assert code == 2 and "already holds a lake" in out


@pytest.mark.parametrize("args, message", [
    (["data", "generate", "--scale", "huge"], "'huge' is not one of"),
    (["data", "generate", "--days", "3"], "3 is not in the range x>=28"),
    (["data", "generate", "--start", "2025-13-01", "--lake", "/tmp/unused-quanyu-lake"], "is not a date"),
    (["data", "validate", "--date", "yesterday"], "'yesterday' is not a date"),
    (["data", "nonsense"], "No such command 'nonsense'"),
])
def test_bad_arguments_get_a_usage_message(args, message, capsys):
    code, out = run(args, capsys)
    assert code == 2 and message in out and "Traceback" not in out


def test_merge_of_an_unknown_day_or_an_empty_folder_says_what_to_do(tiny_lake, tmp_path, ray_session, capsys):
    code, out = run(["data", "merge", "--lake", str(tiny_lake.root), "--date", "1999-01-01"], capsys)
    assert code == 2 and "no raw data for 1999-01-01" in out
    code, out = run(["data", "merge", "--lake", str(tmp_path / "empty")], capsys)
    assert code == 2 and "raw/stores is missing" in out


def test_describe_of_an_empty_lake(tmp_path, capsys):
    code, out = run(["data", "describe", "--lake", str(tmp_path)], capsys)
    assert code == 0 and "no tables yet" in out


def test_runtime_defaults_follow_quanyu_home(tmp_path):
    runtime = Runtime.resolve(environ={"QUANYU_HOME": str(tmp_path)})
    assert runtime.lake.root == tmp_path / "lake"
    assert runtime.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert runtime.ray_address is None
    assert runtime.artifact_root == str(tmp_path / "mlartifacts")
    other = Runtime.resolve(lake=str(tmp_path / "x"), environ={"QUANYU_HOME": str(tmp_path), "RAY_ADDRESS": "ray://h:1",
                                                               "MLFLOW_TRACKING_URI": "http://m:5000"})
    assert (other.lake.root, other.ray_address, other.tracking_uri) == (tmp_path / "x", "ray://h:1", "http://m:5000")
    assert other.artifact_root is None  # the tracking server keeps the artifacts


def test_the_console_script_is_installed_and_answers(tmp_path):
    env = {**os.environ, "QUANYU_HOME": str(tmp_path)}
    done = subprocess.run([str(VENV_BIN / "quanyu"), "--help"], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and "omnichannel" in done.stdout
    done = subprocess.run([str(VENV_BIN / "quanyu"), "data", "describe"], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and "no tables yet" in done.stdout


def test_ray_session_files_go_under_quanyu_home_when_the_path_allows(tmp_path):
    assert ray_temp_dir(Path("/srv/q/.quanyu")) == "/srv/q/.quanyu/ray"
    assert ray_temp_dir(Path("/" + "x" * 80)) is None  # too long for Ray's Unix sockets
    # 60 characters left a plasma socket path of 126 bytes (measured): over the 107 allowed
    assert ray_temp_dir(Path("/tmp/qserve/bench-serving/ray-serve-throughput-optimized")) is None


def test_a_local_ray_started_by_the_cli_keeps_its_files_under_quanyu_home(tmp_path):
    home = Path("/tmp") / f"qh-{os.getpid()}"
    env = {**os.environ, "QUANYU_HOME": str(home)}
    done = subprocess.run([str(VENV_BIN / "quanyu"), "data", "generate", "--scale", "tiny", "--days", "28",
                           "--lake", str(tmp_path / "lake")], capture_output=True, text=True, env=env, timeout=300)
    try:
        assert done.returncode == 0, done.stderr[-2000:]
        assert any((home / "ray").glob("session_*")), "no Ray session under QUANYU_HOME/ray"
        # created readable by this user alone: it holds the tracking store, keys and logs
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
    finally:
        import shutil

        shutil.rmtree(home, ignore_errors=True)
