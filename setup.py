from setuptools import find_packages, setup

setup(
    name="ray_on_spark",
    version="0.1.0",
    description="Run Ray on Spark (setup_ray_cluster) and Spark on Ray.",
    packages=find_packages(include=["ray_on_spark", "ray_on_spark.*"]),
    # The executors' Arrow writer is Java, compiled at run time: it ships as package data.
    package_data={"ray_on_spark.data": ["java/*.java"]},
    entry_points={"console_scripts": ["ray-on-spark=ray_on_spark.cli:main"]},
    python_requires=">=3.9",
    install_requires=["pyspark>=3.5,<5", "ray[default]>=2.52", "psutil"],
    extras_require={
        "test": ["pytest", "pyarrow", "pandas", "nbclient", "nbformat", "ipykernel", "ruff", "grpcio-status", "zstandard"],
    },
)
