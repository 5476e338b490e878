"""A web page where anyone restores a photo with the project's trained runs.

  python -m restore_jax.serve --workdir DIR [--workdir DIR2 ...] [--host 127.0.0.1] [--port 7860] \
      [--max-pixels 4000000] [--tile 512]

Needs the serve extra (pip install -e ".[serve]"). Listens on 127.0.0.1 unless --host says otherwise, sends no
analytics and fetches nothing from outside. Every request is logged (model, sizes, time).
"""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # Before gradio is imported: no outside requests.

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Sequence  # noqa: E402

from absl import logging  # noqa: E402

from restore_jax import restore  # noqa: E402
from restore_jax.serve_requests import DEFAULT_MAX_PIXELS, Restorer, load_models  # noqa: E402


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m restore_jax.serve", description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", action="append", required=True,
                      help="A training run's directory; repeat for several models.")
  parser.add_argument("--host", default="127.0.0.1", help="Address to listen on (default %(default)s).")
  parser.add_argument("--port", type=int, default=7860, help="Port (default %(default)s).")
  parser.add_argument("--max-pixels", "--max_pixels", dest="max_pixels", type=int, default=DEFAULT_MAX_PIXELS,
                      help="Largest upload accepted, in input pixels (default %(default)s).")
  parser.add_argument("--tile", type=int, default=restore.DEFAULT_TILE,
                      help="Default tile size on the page, input pixels (default %(default)s).")
  parser.add_argument("--queue-size", "--queue_size", dest="queue_size", type=int, default=32,
                      help="Requests waiting at most; more are turned away with a message (default %(default)s).")
  args = parser.parse_args(argv)
  if args.max_pixels < 1 or args.queue_size < 1 or args.tile < 0:
    parser.error("--max-pixels and --queue-size must be >= 1 and --tile >= 0.")
  return args


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  logging.set_verbosity(logging.INFO)
  from restore_jax.serve_app import build_app  # pylint: disable=g-import-not-at-top  # gradio: the serve extra.

  models = load_models(args.workdir)
  for model in models:
    logging.info("model: %s%s", model.name, f" ({model.error})" if model.error else "")
  restorer = Restorer(models, tempfile.mkdtemp(prefix="restore_jax_serve_"), max_pixels=args.max_pixels)
  page = build_app(restorer, models, default_tile=args.tile)
  page.queue(default_concurrency_limit=1, max_size=args.queue_size)
  page.launch(server_name=args.host, server_port=args.port, show_error=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
