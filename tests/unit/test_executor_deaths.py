"""The test cluster's failure evidence: which executor logs a failed test's report carries."""

from __future__ import annotations

from ray_on_spark.testing.local_standalone import executor_deaths


def _log(root, app, executor, text):
    d = root / app / executor
    d.mkdir(parents=True)
    (d / "stderr").write_text(text)


def test_an_executor_that_died_of_an_oom_is_shown_with_its_last_lines_and_healthy_ones_are_not(tmp_path):
    _log(tmp_path, "app-1", "0", "INFO started\n" * 100 + 'Exception in thread "Executor task launch worker" '
         "java.lang.OutOfMemoryError: Java heap space\n\tat Foo.bar(Foo.java:1)\n")
    _log(tmp_path, "app-1", "1", "INFO started\nINFO RECEIVED SIGNAL TERM\n")
    shown = executor_deaths(str(tmp_path), tail=5)
    assert "app-1/0/stderr" in shown and "OutOfMemoryError" in shown and "Foo.bar" in shown
    assert "app-1/1/stderr" not in shown
    assert shown.count("INFO started") == 3  # only the tail


def test_no_dead_executor_no_report(tmp_path):
    assert executor_deaths(str(tmp_path)) == ""
