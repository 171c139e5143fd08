"""``python -m ray_on_spark`` / ``ray-on-spark``: the command line.

* ``start``  -- in a spark-submit application, a pyspark shell's driver or a plain Python with
  ``--master``: start a Ray-on-Spark cluster (``setup_ray_cluster``'s options as flags), print
  how to reach it, serve until Ctrl-C or SIGTERM (the global cluster's code path), stop.
* ``status`` -- the global cluster of this user and host (or ``--address``): its nodes, their
  Spark partitions and hosts, resources used and free, the Spark job group, uptime.
* ``check``  -- the distribution check: does every node run work?
* ``submit`` -- Spark on Ray: run a PySpark file (or a jar's ``--class``) as a Spark application
  whose executors live in Ray actors, as ``raydp-submit`` does; its exit status is the app's
  (:mod:`ray_on_spark.on_ray.submit`).

Exit codes: 0 done; 1 the cluster or a connection failed; 2 a usage mistake (a bad flag or
value). Errors go to stderr as one line, with no traceback, for mistakes a user can fix.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

from ray_on_spark.errors import RayOnSparkError

logger = logging.getLogger(__name__)

PROG = "ray-on-spark"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A mistake in the command line, reported with exit code 2."""


# ---------------------------------------------------------------- argument parsing
def _max_nodes(value: str) -> int:
    if value.lower() == "max":
        return -1  # MAX_NUM_WORKER_NODES
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of nodes (or 'max')") from None


def _size(value: str) -> object:
    """A memory size: bytes, or a string like 2g (checked by setup_ray_cluster)."""
    return int(value) if value.isdigit() else value


def _json_dict(value: str) -> Dict[str, Any]:
    try:
        parsed = json.loads(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not JSON ({e}); e.g. '{{\"include_log_monitor\": false}}'") from None
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"include_log_monitor\": false}'")
    return parsed


def _conf(value: str) -> List[str]:
    key, sep, val = value.partition("=")
    if not sep or not key.startswith("spark."):
        raise argparse.ArgumentTypeError(f"{value!r} is not a Spark conf; write --conf spark.key=value")
    return [key, val]


_METAVARS = {_size: "SIZE", _json_dict: "JSON", str: "PATH", float: "X"}

#: ``start`` flags: setup_ray_cluster's keyword arguments (the global cluster's: no ray_temp_root_dir).
START_OPTIONS = [
    ("max_worker_nodes", _max_nodes, "Ray worker nodes, one per Spark task slot ('max': every free slot)"),
    ("min_worker_nodes", int, "autoscale between this and --max-worker-nodes"),
    ("num_cpus_worker_node", int, "CPUs per worker node (default: spark.task.cpus)"),
    ("num_cpus_head_node", int, "CPUs of the head on the driver (default: the host's, as Ray's global mode)"),
    ("num_gpus_worker_node", int, "GPUs per worker node"),
    ("num_gpus_head_node", int, "GPUs of the head (default: the driver's Spark GPUs)"),
    ("memory_worker_node", _size, "heap per worker node (bytes or e.g. 2g)"),
    ("memory_head_node", _size, "heap of the head"),
    ("object_store_memory_worker_node", _size, "object store per worker node"),
    ("object_store_memory_head_node", _size, "object store of the head"),
    ("head_node_options", _json_dict, "extra `ray start` options of the head, as JSON"),
    ("worker_node_options", _json_dict, "extra `ray start` options of the worker nodes, as JSON"),
    ("collect_log_to_path", str, "copy every node's logs there when it stops"),
    ("autoscale_upscaling_speed", float, "Ray autoscaler's upscaling_speed"),
    ("autoscale_idle_timeout_minutes", float, "remove a node idle this long (autoscaling)"),
]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Ray on Spark, and Spark on Ray, from the command line.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    start = sub.add_parser(
        "start", help="start a Ray cluster on this Spark application and serve until Ctrl-C / SIGTERM",
        description="Start a Ray-on-Spark cluster (one per user and host: the global cluster other drivers "
                    "find with `status` or ray_on_spark.connect_global_cluster()), print its address, client "
                    "address and dashboard URL, and serve until Ctrl-C or SIGTERM; then stop it, leaving nothing.",
    )
    for name, kind, text in START_OPTIONS:
        start.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, required=name == "max_worker_nodes",
                           help=text, metavar=_METAVARS.get(kind, "N"))
    start.add_argument("--strict-mode", action="store_true", help="refuse nodes below Ray's recommended sizes")
    start.add_argument("--master", help="Spark master URL when no SparkSession exists yet (under spark-submit: "
                                        "spark-submit's)")
    start.add_argument("--conf", type=_conf, action="append", default=[], metavar="spark.KEY=VALUE",
                       help="a Spark conf for the SparkSession this command creates (repeatable)")

    status = sub.add_parser("status", help="the nodes, resources and uptime of a running cluster",
                            description="Show the global Ray-on-Spark cluster of this user and host (or --address).")
    _connection_flags(status)
    status.add_argument("--json", action="store_true", help="one JSON object, for scripts")

    check = sub.add_parser("check", help="does every node run work? (tasks, an actor per node)",
                           description="Run CPU tasks and one actor per node on the cluster and say how much ran "
                                       "where; exit 1 when a node was left out.")
    _connection_flags(check)
    check.add_argument("--json", action="store_true", help="one JSON object, for scripts")

    submit = sub.add_parser(
        "submit", help="run a Spark application whose executors live in Ray (as raydp-submit)",
        description="Connect to Ray, start a Spark-on-Ray session with these executors, run the application "
                    "(a PySpark file, or a jar's --class) as its driver, stop. Exit status: the application's.")
    submit.add_argument("--ray-address", help="the Ray cluster's address (default: RAY_ADDRESS, else a local Ray)")
    submit.add_argument("--num-executors", type=int, default=1, metavar="N")
    submit.add_argument("--executor-cores", type=int, default=1, metavar="N")
    submit.add_argument("--executor-memory", default="1g", metavar="SIZE")
    submit.add_argument("--name", help="the application's name (default: the file's)")
    submit.add_argument("--class", dest="main_class", metavar="CLASS", help="the main class of a jar application")
    submit.add_argument("--conf", type=_conf, action="append", default=[], metavar="spark.KEY=VALUE",
                        help="a Spark conf of the session (repeatable)")
    submit.add_argument("app", metavar="APP", help="a PySpark .py file, or a .jar with --class")
    submit.add_argument("app_args", nargs=argparse.REMAINDER, metavar="ARGS", help="the application's arguments")
    return p


def _connection_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", help="a Ray cluster's GCS address (default: this user's global cluster)")
    p.add_argument("--token-file", help="the cluster's token file, with --address (else RAY_AUTH_TOKEN)")


# ---------------------------------------------------------------- commands
def cmd_start(args: argparse.Namespace) -> int:
    from ray_on_spark import _ray
    from ray_on_spark.on_spark import api, arguments, global_cluster
    from ray_on_spark.runtime.host import driver_host_memory_bytes

    kwargs = {name: getattr(args, name) for name, _, _ in START_OPTIONS if getattr(args, name) is not None}
    kwargs["strict_mode"] = args.strict_mode
    # Every value is checked before a JVM starts: a mistake costs a second, not a SparkSession.
    arguments.check_arguments(known_options=_ray.ray_start_option_names, host_memory=driver_host_memory_bytes(),
                              is_global=True, **kwargs)
    spark, ours = _spark_session(args.master, args.conf)
    try:
        api.setup_global_ray_cluster(is_blocking=False, **kwargs)
        cluster = api.active_cluster()
        assert cluster is not None
        info = global_cluster.read_info() or {}
        print(f"Ray cluster {cluster.cluster_id} is up on Spark application {spark.sparkContext.applicationId}:")
        print(f"  address         {cluster.address}")
        print(f"  client address  {cluster.client_address}")
        print(f"  dashboard       {cluster.dashboard_url or '(off)'}")
        if info.get("token_path"):
            print(f"  token file      {info['token_path']}")
        print("Connect from this user's drivers on this host with ray_on_spark.connect_global_cluster();")
        print("`ray-on-spark status` shows it. Ctrl-C or SIGTERM stops it.", flush=True)
        try:
            global_cluster.block_until_stopped(cluster)
        finally:
            api.shutdown_ray_cluster()
        print("Ray cluster stopped.", flush=True)
    finally:
        if ours:
            spark.stop()
    return EXIT_OK


def _spark_session(master: Optional[str], confs: Sequence[List[str]]) -> Any:
    """The active SparkSession (spark-submit's, a shell's), else a new one; and whether this command made it."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active, False
    builder = SparkSession.builder.appName("ray_on_spark-cli")
    if master:
        builder = builder.master(master)
    for key, value in confs:
        builder = builder.config(key, value)
    return builder.getOrCreate(), True


def _connect(args: argparse.Namespace) -> None:
    """ray.init() to --address (with --token-file or RAY_AUTH_TOKEN), else to this user's global cluster."""
    import ray

    from ray_on_spark import _ray
    from ray_on_spark.on_spark import global_cluster

    if args.address:
        if args.token_file:
            _ray.use_auth(token_path=args.token_file)
        ray.init(address=args.address, log_to_driver=False, logging_level=logging.WARNING)
    else:
        if args.token_file:
            raise UsageError("--token-file goes with --address (the global cluster's token is found by itself)")
        global_cluster.connect_global_cluster(log_to_driver=False, logging_level=logging.WARNING)


def cluster_status() -> Dict[str, Any]:
    """The connected cluster's nodes (partition, host, resources used and free), job group and uptime."""
    import ray

    from ray_on_spark import _ray
    from ray_on_spark.on_spark.ray_start import LABEL_CLUSTER, LABEL_PARTITION

    available = _ray.available_resources_per_node()
    nodes, cluster_id, head_start_ms = [], None, None
    for view in _ray.list_nodes(_ray.gcs_client(ray.get_runtime_context().gcs_address)):
        if not view.alive:
            continue
        free = available.get(view.node_id, {})
        cluster_id = cluster_id or view.labels.get(LABEL_CLUSTER)
        if view.is_head:
            head_start_ms = view.start_time_ms
        nodes.append({
            "node_id": view.node_id, "address": view.address, "kind": "head" if view.is_head else "worker",
            "spark_partition": view.labels.get(LABEL_PARTITION),
            "resources": {key: {"total": view.resources.get(key, 0.0), "free": free.get(key, 0.0)}
                          for key in ("CPU", "GPU", "memory", "object_store_memory")},
        })
    nodes.sort(key=lambda n: (n["kind"] != "head", str(n["spark_partition"]), n["address"]))
    return {
        "address": ray.get_runtime_context().gcs_address,
        "cluster_id": cluster_id,
        "spark_job_group": f"ray_on_spark-{cluster_id}" if cluster_id else None,
        "uptime_s": round(time.time() - head_start_ms / 1000.0, 1) if head_start_ms else None,
        "nodes": nodes,
    }


def _format_status(status: Dict[str, Any]) -> str:
    def used(r: Dict[str, float], gib: bool = False) -> str:
        scale = 2**30 if gib else 1
        return f"{(r['total'] - r['free']) / scale:g}/{r['total'] / scale:g}"

    uptime = status["uptime_s"]
    lines = [f"Ray cluster {status['cluster_id'] or '?'} at {status['address']}, up "
             f"{'?' if uptime is None else f'{uptime:.0f}s'}; Spark job group {status['spark_job_group'] or '-'}",
             f"{'node':14} {'kind':6} {'partition':9} {'address':16} {'CPU used':>9} {'GPU':>5} "
             f"{'mem GiB':>11} {'store GiB':>11}"]
    for n in status["nodes"]:
        r = n["resources"]
        partition = n["spark_partition"] if n["spark_partition"] is not None else "-"
        lines.append(f"{n['node_id'][:12]:14} {n['kind']:6} {partition:9} {n['address']:16} {used(r['CPU']):>9} "
                     f"{used(r['GPU']):>5} {used(r['memory'], True):>11.11} {used(r['object_store_memory'], True):>11.11}")
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    import ray

    _connect(args)
    try:
        status = cluster_status()
    finally:
        ray.shutdown()
    print(json.dumps(status) if args.json else _format_status(status))
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    import ray

    from ray_on_spark.check import check_distribution

    _connect(args)
    try:
        report = check_distribution(spark=None)
    finally:
        ray.shutdown()
    print(json.dumps(report.to_dict()) if args.json else report.format())
    return EXIT_OK if report.ok else EXIT_FAILED


def cmd_submit(args: argparse.Namespace) -> int:
    from ray_on_spark.on_ray import submit

    logging.getLogger("ray_on_spark").setLevel(logging.INFO)  # the session's start and stop, as spark-submit says
    return submit.run(submit.Submission(
        app=args.app, app_args=list(args.app_args), main_class=args.main_class, name=args.name,
        num_executors=args.num_executors, executor_cores=args.executor_cores, executor_memory=args.executor_memory,
        confs={k: v for k, v in args.conf}, ray_address=args.ray_address))


COMMANDS = {"start": cmd_start, "status": cmd_status, "check": cmd_check, "submit": cmd_submit}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)  # exits 2 with argparse's message on a bad flag
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[args.command](args)
    except (UsageError, ValueError, TypeError) as e:  # the user's values, refused before anything started
        print(f"{PROG} {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (RayOnSparkError, ConnectionError, TimeoutError) as e:
        print(f"{PROG} {args.command}: failed: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
