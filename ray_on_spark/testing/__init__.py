"""Real Spark for tests, the demo and the benchmarks (never used by the library itself).

* ``local_standalone`` -- a Spark standalone master and workers on 127.0.0.1, from pyspark's jars
"""
