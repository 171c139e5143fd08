"""``python -m ray_on_spark``: the command line (:mod:`ray_on_spark.cli`)."""

import sys

from ray_on_spark.cli import main

sys.exit(main())
