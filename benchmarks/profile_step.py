"""Where a recipe's training step spends its time on XLA:CPU, op by op, from a profiler trace of the real step.

    python benchmarks/profile_step.py --config configs/sr_wgangp.py:bench [--steps 2] [--top 30] \
        [--trace_dir /tmp/restore_jax_profile]

Runs `restore_jax.bench` (same flags; `--config.KEY=VALUE` overrides work) with XLA's per-op trace events on
(`--xla_cpu_enable_xprof_traceme`) and `jax.profiler` tracing the timed steps, then prints the thread time per step
of each kind of op (fusions grouped by XLA's name without the numeric suffix) and the most expensive single ops.

What the trace shows and what it does not: element-wise fusions, copies, transposes, concatenations and small
matrix products appear with their full duration, summed over both threads of the CPU's pool. Large convolutions
and matrix products hand their work to Eigen's thread pool, whose tasks are not traced, so they appear short or
not at all: their time is the step's wall time x threads minus what is listed. Reading the trace needs
TensorFlow's copy of the profiler protos (`tensorflow.tsl.profiler.protobuf.xplane_pb2`), which the test extra
installs.
"""

import collections
import contextlib
import glob
import os
import re
import sys

_TRACE_FLAG = "--xla_cpu_enable_xprof_traceme=true"
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _TRACE_FLAG).strip()

import jax  # noqa: E402  (XLA_FLAGS must be set first)
from absl import app, flags  # noqa: E402

from restore_jax import bench  # noqa: E402

flags.DEFINE_integer("top", 30, "How many single ops to list.")
flags.DEFINE_string("trace_dir", "/tmp/restore_jax_profile", "Where jax.profiler writes the trace.")
FLAGS = flags.FLAGS


def op_times(trace_dir: str, steps: int) -> collections.Counter:
  """Thread time per step (ms) of every traced XLA op in the newest trace under `trace_dir`."""
  from tensorflow.tsl.profiler.protobuf import xplane_pb2

  path = sorted(glob.glob(os.path.join(trace_dir, "plugins", "profile", "*", "*.xplane.pb")))[-1]
  space = xplane_pb2.XSpace()
  with open(path, "rb") as f:
    space.ParseFromString(f.read())
  times = collections.Counter()
  for plane in space.planes:
    names = {key: meta.name for key, meta in plane.event_metadata.items()}
    for line in plane.lines:
      if "XLAEigen" not in line.name and "PjRtCpuClient" not in line.name:
        continue  # Python frames and other threads.
      for event in line.events:
        name = names.get(event.metadata_id, "?")
        if not name.startswith("ThunkExecutor"):  # The executor's own spans contain the ops.
          times[name] += event.duration_ps / 1e9 / steps
  return times


def main(argv):
  record = bench.record_lowerings

  @contextlib.contextmanager
  def traced():
    with record() as lowered:
      jax.profiler.start_trace(FLAGS.trace_dir)
      try:
        yield lowered
      finally:
        jax.profiler.stop_trace()

  bench.record_lowerings = traced  # The timed steps, and only those, are traced.
  bench.main(argv)
  times = op_times(FLAGS.trace_dir, FLAGS.steps)
  kinds, counts = collections.Counter(), collections.Counter()
  for name, ms in times.items():
    kind = re.sub(r"\.\d+$", "", name)
    kinds[kind] += ms
    counts[kind] += 1
  print(f"\ntraced op time per step, both threads: {sum(times.values()):.1f} ms")
  print(f"{'ms/step':>9}  {'ops':>5}  kind")
  for kind, ms in kinds.most_common(25):
    print(f"{ms:9.1f}  {counts[kind]:5d}  {kind}")
  print(f"\n{'ms/step':>9}  op")
  for name, ms in times.most_common(FLAGS.top):
    print(f"{ms:9.2f}  {name}")


if __name__ == "__main__":
  app.run(main, argv=sys.argv)
