"""The shared runtime's small mechanisms: the one deadline loop, private files, the supervisor's command line."""

from __future__ import annotations

import os
import stat
import sys
import time

import pytest

from ray_on_spark.runtime import private, supervised, waiting


def test_wait_until_returns_the_first_ready_value_and_treats_false_and_errors_as_not_yet():
    answers = iter([RuntimeError("not up"), False, None, 0, 7])

    def probe():
        a = next(answers)
        if isinstance(a, Exception):
            raise a
        return a

    assert waiting.wait_until(probe, timeout=5, what="x", poll=0.001) == 0  # 0 is a value, not "not yet"


def test_wait_until_names_what_it_waited_for_and_the_last_error():
    def probe():
        raise ConnectionRefusedError("nobody home")

    t0 = time.monotonic()
    with pytest.raises(waiting.WaitTimeout, match=r"waiting for the head .*nobody home"):
        waiting.wait_until(probe, timeout=0.2, what="the head", poll=0.01)
    assert time.monotonic() - t0 < 2


def test_a_check_that_raises_stops_the_wait_at_once():
    def check():
        raise RuntimeError("the job failed")

    with pytest.raises(RuntimeError, match="the job failed"):
        waiting.wait_until(lambda: None, timeout=60, what="x", check=check)


def test_poll_until_gives_none_at_its_deadline():
    assert waiting.poll_until(lambda: False, timeout=0.05, poll=0.01) is None


def test_private_files_are_0600_and_dirs_0700(tmp_path):
    d = private.private_dir(str(tmp_path / "a" / "b"))
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    f = private.write_private_file(os.path.join(d, "token"), "secret")
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600 and open(f).read() == "secret"
    private.write_private_file(f, "new")  # replaced atomically
    assert open(f).read() == "new"
    with pytest.raises(FileExistsError):  # an exclusive secret never writes into a planted file
        private.write_private_file(f, "x", exclusive=True)
    private.remove_file(f)
    private.remove_file(f)  # gone is fine
    t = private.private_temp_dir("ros-test-", str(tmp_path / "root"))
    assert stat.S_IMODE(os.stat(t).st_mode) == 0o700 and os.path.basename(t).startswith("ros-test-")


def test_the_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert private.cache_dir("jars") == str(tmp_path / "ray_on_spark" / "jars")


def test_the_supervisor_command_is_written_once_with_every_option():
    cmd = supervised.supervisor_command(
        ["ray", "start"], log="/l", cleanup_dir="/d", start_timeout=9, watch=("10.0.0.1", 6379), what="Spark executor",
        ready_marker="up", janitor=True, collect_logs_to="/c/x",
    )
    assert cmd[:3] == [sys.executable, "-m", "ray_on_spark.runtime.supervisor"]
    assert cmd[cmd.index("--") + 1:] == ["ray", "start"]
    opts = cmd[3:cmd.index("--")]
    assert opts[opts.index("--parent-pid") + 1] == str(os.getpid())
    assert opts[opts.index("--watch-host") + 1] == "10.0.0.1" and opts[opts.index("--watch-port") + 1] == "6379"
    assert "--janitor" in opts and opts[opts.index("--ready-marker") + 1] == "up"
    plain = supervised.supervisor_command(["x"], log="/l", cleanup_dir="/d", start_timeout=1)
    assert "--watch-host" not in plain and "--janitor" not in plain and "--collect-logs-to" not in plain
