"""Starting a local Ray on a busy machine: Ray gives its raylet a fixed 30 s to register, so the
time-out is reproduced here by Ray's own exception from ray.init, not by loading the machine."""

from __future__ import annotations

import pytest

from jobs import runtime

TIMED_OUT = ("The current node timed out during startup. This could happen because some of the raylet failed "
             "to startup or the GCS has become overloaded.")


class _SlowRay:
    """ray.init that times out `failures` times, then starts."""

    def __init__(self, failures: int, error: str = TIMED_OUT):
        self.failures, self.error, self.calls, self.shutdowns = failures, error, [], 0

    def init(self, **kwargs):
        self.calls.append(kwargs)
        if len(self.calls) <= self.failures:
            raise Exception(self.error)

    def shutdown(self):
        self.shutdowns += 1


@pytest.fixture
def slow_ray(monkeypatch):
    import ray

    def install(failures: int, error: str = TIMED_OUT) -> _SlowRay:
        fake = _SlowRay(failures, error)
        monkeypatch.setattr(ray, "init", fake.init)
        monkeypatch.setattr(ray, "shutdown", fake.shutdown)
        return fake

    return install


def test_a_slow_start_gets_another_try_and_says_so(slow_ray, capsys):
    ray = slow_ray(failures=2)
    runtime.start_local_ray(num_cpus=2)
    assert len(ray.calls) == 3 and ray.shutdowns == 2
    assert all(call == {"address": "local", "num_cpus": 2} for call in ray.calls)
    notes = capsys.readouterr().err
    assert notes.count("did not start within Ray's 30 s") == 2 and "try 2 of 3" in notes


def test_a_start_that_never_comes_says_what_to_do(slow_ray):
    ray = slow_ray(failures=runtime.LOCAL_RAY_ATTEMPTS)
    with pytest.raises(runtime.RayStartError, match=r"did not start in 3 tries.*--ray-address"):
        runtime.start_local_ray()
    assert len(ray.calls) == runtime.LOCAL_RAY_ATTEMPTS


def test_other_start_errors_are_not_retried(slow_ray):
    ray = slow_ray(failures=1, error="Invalid option keyword foo")
    with pytest.raises(Exception, match="Invalid option keyword foo"):
        runtime.start_local_ray(foo=1)
    assert len(ray.calls) == 1 and ray.shutdowns == 0
