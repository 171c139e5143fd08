"""Class-data archive options (ray_on_spark.on_ray.cds): pure file logic, no Spark, no Ray."""

from __future__ import annotations

import os


def test_options_record_once_then_use_the_archive_and_the_key_follows_the_jars(tmp_path):
    from ray_on_spark.on_ray import cds

    home = tmp_path / "spark"
    (home / "jars").mkdir(parents=True)
    (home / "jars" / "a.jar").write_bytes(b"x")
    java, root = "/usr/bin/java", str(tmp_path / "cache")
    first = cds.jvm_options(root, java, str(home), "executor", 0)
    assert len(first) == 1 and first[0].startswith("-XX:DumpLoadedClassList=")
    listed = first[0].split("=", 1)[1]
    open(listed, "w").write("java/lang/Object\n")
    assert cds.jvm_options(root, java, str(home), "executor", 1) == []  # one list is enough
    d = cds.archive_dir(root, java, str(home))
    open(os.path.join(d, "executor.jsa"), "w").close()
    assert cds.jvm_options(root, java, str(home), "executor", 2) == [
        f"-XX:SharedArchiveFile={os.path.join(d, 'executor.jsa')}", "-Xshare:auto"]
    (home / "jars" / "b.jar").write_bytes(b"y")  # another Spark: another archive
    assert cds.archive_dir(root, java, str(home)) != d
    assert cds.executor_classpath(str(home)) == f"{home}/jars/*"  # conf/ only when it exists
