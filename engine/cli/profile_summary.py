"""Summarizes a profiler trace written by `--profile_steps`.

    vae-engine ... --profile_steps=200,400 --model_dir=/tmp/run
    vae-engine profile_summary --logdir=/tmp/run [--top=15]

Reads the newest `<logdir>/plugins/profile/*/*.xplane.pb` and prints:
  - the busiest operations (TF kernels and XLA thunks) by total time,
    summed over threads, per traced training step;
  - XLA executions: how many, their median length, and the median host time
    between one and the next (what `--steps_per_loop` and whole-step XLA
    are meant to remove).
TensorBoard's profile plugin shows the same trace as a timeline.
"""

from __future__ import annotations

from engine.cli import tool  # First: TensorFlow's quiet import.

from absl import flags

FLAGS = flags.FLAGS


def define_flags():
  """Defined only when run as a script, so tests can import the module."""
  flags.DEFINE_string("logdir", None, "The run's --model_dir (or any "
                      "directory holding plugins/profile).", required=True)
  flags.DEFINE_integer("top", 15, "Operations to list.", lower_bound=1)
  flags.DEFINE_integer("steps", 0, "Training steps the trace covers, to "
                       "print per-step times (0: the trace's totals).",
                       lower_bound=0)
  flags.DEFINE_enum("group", "op", ["op", "kernel", "kind"],
                    "op: each operation; kernel: by kernel type (Conv2D, "
                    "MatMul, ...); kind: convolutions, matmuls, the "
                    "optimizer update, input and the rest.")


# Events that only wrap others (executors, thread pools, XLA's runtime).
_WRAPPERS = ("Executor", "Execute", "BlockUntilReady", "Await",
             "ProcessAsync", "ParallelFor", "Iterator::", "KernelAndDevice",
             "EagerLocal", "TFE_", "RunAsync", "FunctionRun")
_XLA_EXECUTION = "CpuExecutable::ExecuteAsyncOnStream"


def newest_trace(logdir: str) -> str:
  """Path of the newest xplane.pb under `logdir`.

  Raises:
    UserError: There is none.
  """
  import glob
  import os

  from engine.errors import UserError

  traces = glob.glob(os.path.join(logdir, "plugins", "profile", "*",
                                  "*.xplane.pb"))
  if not traces:
    raise UserError(f"--logdir={logdir}: no plugins/profile/*/*.xplane.pb "
                    "(train with --profile_steps=FIRST,LAST)")
  return max(traces, key=os.path.getmtime)


# Coarse kinds of kernels, by substrings of their type (first match wins).
_KINDS = (("convolution", ("Conv",)), ("matmul", ("MatMul", "Einsum", "dot")),
          ("optimizer", ("Apply", "Adam", "AssignAddVariable",
                         "AssignSubVariable", "ResourceScatter")),
          ("input", ("Gather", "Iterator", "Shuffle", "StatelessRandom",
                     "IndexShuffle", "Map")))


def kernel_of(name: str) -> str:
  """The kernel type of a trace event (`scope/op:Type` -> `Type`)."""
  return name.rsplit(":", 1)[-1].lstrip("_").removeprefix("Mkl").removeprefix(
      "Native")


def kind_of(name: str) -> str:
  kernel = kernel_of(name)
  for kind, parts in _KINDS:
    if any(part in kernel for part in parts):
      return kind
  return "other"


def grouped(ops, group: str) -> list:
  """(name, total, count) per op, kernel type or kind, busiest first."""
  import collections
  if group == "op":
    return ops
  key = kernel_of if group == "kernel" else kind_of
  totals, counts = collections.Counter(), collections.Counter()
  for name, total, count in ops:
    totals[key(name)] += total
    counts[key(name)] += count
  return [(name, total, counts[name]) for name, total in totals.most_common()]


def summarize(path: str) -> dict:
  """Totals per operation and XLA execution timing from one trace.

  Returns:
    Dict with `ops` (list of (name, total_ms, count), busiest first),
    `busy_ms` (their sum), `span_ms` (first to last event of the trace's
    compute threads), and `xla` (count, median_ms, median_gap_ms; count 0
    without XLA).
  """
  import collections
  import statistics

  from tensorflow.tsl.profiler.protobuf import xplane_pb2

  space = xplane_pb2.XSpace()
  with open(path, "rb") as f:
    space.ParseFromString(f.read())
  totals, counts = collections.Counter(), collections.Counter()
  executions = []
  first, last = None, None
  for plane in space.planes:
    names = {key: meta.name for key, meta in plane.event_metadata.items()}
    for line in plane.lines:
      for event in line.events:
        name = names.get(event.metadata_id, "?")
        begin = line.timestamp_ns * 1000 + event.offset_ps
        if name == _XLA_EXECUTION:
          executions.append((begin, event.duration_ps))
        # Only TF's own threads (tf_Compute, tf_numa_*_Eigen, tf_data_*)
        # run ops; the Python thread's events enclose whole loop calls.
        if (not line.name.startswith("tf_")
            or any(w in name for w in _WRAPPERS)):
          continue
        totals[name] += event.duration_ps
        counts[name] += 1
        end = begin + event.duration_ps
        first = begin if first is None else min(first, begin)
        last = end if last is None else max(last, end)
  executions.sort()
  gaps = [(b[0] - a[0] - a[1]) / 1e9 for a, b in zip(executions,
                                                      executions[1:])]
  return {
      "ops": [(name, total / 1e9, counts[name])
              for name, total in totals.most_common()],
      "busy_ms": sum(totals.values()) / 1e9,
      "span_ms": ((last - first) / 1e9) if first is not None else 0.0,
      "xla": {
          "count": len(executions),
          "median_ms": (statistics.median(d for _, d in executions) / 1e9
                        if executions else 0.0),
          "median_gap_ms": statistics.median(gaps) if gaps else 0.0,
      },
  }


def main(argv):
  del argv
  path = newest_trace(FLAGS.logdir)
  summary = summarize(path)
  per = max(FLAGS.steps, 1)
  unit = "ms/step" if FLAGS.steps else "ms"
  print(f"{path}\nbusy {summary['busy_ms'] / per:.2f} {unit} over "
        f"{summary['span_ms'] / per:.2f} {unit} of wall time\n")
  print(f"{unit:>10s} {'share':>6s} {'count':>7s}  operation")
  for name, total, count in grouped(summary["ops"], FLAGS.group)[:FLAGS.top]:
    print(f"{total / per:10.3f} {100 * total / summary['busy_ms']:5.1f}% "
          f"{count:7d}  {name[:100]}")
  xla = summary["xla"]
  if xla["count"]:
    print(f"\nXLA executions: {xla['count']}, median {xla['median_ms']:.3f} "
          f"ms, median host gap between executions "
          f"{xla['median_gap_ms']:.3f} ms")



def cli() -> None:
  """The `vae-engine profile_summary` command."""
  define_flags()
  tool.run_tool(main)


if __name__ == "__main__":
  cli()
