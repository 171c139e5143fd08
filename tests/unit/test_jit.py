"""ray_on_spark.on_ray.jit: the JIT options for init_spark's JVMs, and turning them off (no Spark)."""

from __future__ import annotations

import pytest

from ray_on_spark.on_ray import jit


def test_tier4_thresholds_are_raised_by_default(monkeypatch):
    monkeypatch.delenv("RAY_ON_SPARK_JIT_TUNING", raising=False)
    options = jit.startup_options()
    assert options == list(jit.TIER4_THRESHOLDS)
    assert {o.split("=")[0] for o in options} == {
        "-XX:Tier4InvocationThreshold", "-XX:Tier4MinInvocationThreshold",
        "-XX:Tier4CompileThreshold", "-XX:Tier4BackEdgeThreshold"}


@pytest.mark.parametrize("value", ["0", "false", "off", " no "])
def test_the_env_var_turns_them_off(monkeypatch, value):
    monkeypatch.setenv("RAY_ON_SPARK_JIT_TUNING", value)
    assert jit.startup_options() == []
