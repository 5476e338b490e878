"""A trained generator, loaded from a workdir for evaluation and restoration.

The workdir records everything needed: DIR/config.json says which network to build, the checkpoint holds its
weights. Only the generator's arrays are read from the checkpoint (orbax's partial restore: not the optimizers,
the critic or the data iterator), into the shapes `create_gan_state` would make, found with `jax.eval_shape` so
nothing is initialised or compiled.
"""

import dataclasses
import functools
import json
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from etils import epath

from restore_jax import checkpoint, models, plugins
from restore_jax import task as task_lib
from restore_jax.state import create_gan_state


class NoCheckpoint(ValueError):
  """The directory is not a training workdir, or holds no readable checkpoint."""


@dataclasses.dataclass(frozen=True)
class LoadedGenerator:
  config: ml_collections.ConfigDict  # The training config, from DIR/config.json.
  module: nn.Module  # The generator network, built from config.generator.
  variables: Any  # {"params", "batch_stats"}: the EMA ones unless asked otherwise.
  step: int  # The training step the checkpoint was saved at.
  task: task_lib.Task  # The task's geometry: scale, channels, mask, border crop.

  @property
  def scale(self) -> int:
    """Output size / input size (4 for x4 super-resolution, 1 for same-size restoration)."""
    return self.task.scale


def load_config(workdir: epath.PathLike) -> ml_collections.ConfigDict:
  """The config a run was trained with, from DIR/config.json."""
  path = epath.Path(workdir) / "config.json"
  if not path.exists():
    raise NoCheckpoint(f"{path} does not exist: {epath.Path(workdir)} is not a training workdir. Give the "
                       f"--workdir of a run of `python -m restore_jax.main`, which writes config.json there.")
  recorded = json.loads(path.read_text())
  recorded.pop(checkpoint.SAMPLE_FILES_KEY, None)  # A record of the run's data kept beside its config.
  try:
    checkpoint.check_state_layout(recorded, path)
  except checkpoint.IncompatibleConfig as e:
    raise NoCheckpoint(str(e)) from e
  return ml_collections.ConfigDict(recorded)


def load_generator(workdir: epath.PathLike, *, use_ema: bool = True, step: int | str | None = None
                   ) -> LoadedGenerator:
  """The generator of the run in `workdir`, with the weights of one of its checkpoints.

  step: None = the newest checkpoint in DIR/checkpoints that reads back whole (damaged newer ones are skipped
  with a warning and left in place); an int = exactly that step; "best" = the checkpoint in DIR/best kept by
  evaluation. use_ema: the EMA of the generator's weights (what evaluation and restoration should use) or, when
  False, the raw weights the optimizer last wrote.
  """
  if isinstance(step, str) and step != "best":
    raise ValueError(f"step must be a step number, 'best' or None (the newest), not {step!r}.")
  workdir = checkpoint.absolute(workdir)  # Orbax refuses relative paths; users type them.
  config = load_config(workdir)
  plugins.import_for(config)
  generator = models.make_generator(config.generator)
  discriminator = models.make_discriminator(config.discriminator)
  abstract = _abstract_state(config, generator, discriminator)
  if step == "best":
    directory, items, wanted = workdir / "best", ("state", "metrics", "digest"), None
  else:
    directory, items, wanted = workdir / "checkpoints", ("state", "data", "digest"), step
  if not directory.exists():
    raise NoCheckpoint(f"{workdir} has no checkpoint: {directory} does not exist. Train longer than "
                       f"checkpoint_every steps (or to the end) to write one.")
  manager = checkpoint.open_read_only(directory, items)
  try:
    variables, saved_step = checkpoint.restore_generator(manager, abstract, use_ema=use_ema, step=wanted)
  except FileNotFoundError as e:
    raise NoCheckpoint(f"{workdir} has no usable checkpoint: {e}") from e
  finally:
    manager.close()
  return LoadedGenerator(config=config, module=generator, variables=variables, step=int(saved_step),
                         task=task_lib.from_config(config))


def parse_run_spec(spec: str) -> tuple[str, int | str | None]:
  """"DIR", "DIR:STEP" or "DIR:best" -> (DIR, step) as load_generator takes them (gs://... has no digits after ':')."""
  head, _, tail = spec.rpartition(":")
  if head and (tail.isdigit() or tail == "best"):
    return head, int(tail) if tail.isdigit() else tail
  return spec, None


def load_init_from(generator_config: ml_collections.ConfigDict) -> LoadedGenerator:
  """The generator `generator.init_from` ("DIR[:STEP]") names: its EMA weights unless generator.init_from_ema is
  False. How a run chains to the one it starts from, in training and in network interpolation."""
  workdir, step = parse_run_spec(str(generator_config.init_from))
  return load_generator(workdir, use_ema=bool(generator_config.get("init_from_ema", True)), step=step)


def variable_shapes(variables: Any) -> Any:
  """The tree of (shape, dtype): what two generators must share for one's weights to stand in for the other's."""
  return jax.tree.map(lambda x: (x.shape, x.dtype), variables)


def interpolate_with_start(loaded: LoadedGenerator, alpha: float) -> LoadedGenerator:
  """ESRGAN's network interpolation (Wang et al. 2018, section 3.4): the weights (1 - alpha) * start + alpha * run.

  `start` is the generator the run was initialised from (its generator.init_from: for ESRGAN and Real-ESRGAN, the
  PSNR-oriented model; the newest checkpoint of that run unless init_from names a step). alpha = 1 is the run as
  trained, 0 the model it started from; in between, fidelity is traded against the GAN's texture without
  retraining (ESRGAN prefers it to blending the two models' output images).
  """
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f"The interpolation weight alpha must be in [0, 1], got {alpha}.")
  spec = str(loaded.config.generator.get("init_from") or "")
  if not spec:
    raise ValueError("Network interpolation blends a run with the run its generator started from, but this run's "
                     "generator.init_from is empty: it was trained from scratch.")
  try:
    start = load_init_from(loaded.config.generator)
  except NoCheckpoint as e:
    raise NoCheckpoint(f"generator.init_from={spec!r}, the run to interpolate with: {e}") from e
  if variable_shapes(start.variables) != variable_shapes(loaded.variables):
    raise ValueError(f"generator.init_from={spec!r} holds a generator of other shapes than this run's.")
  variables = jax.tree.map(lambda a, b: (1.0 - alpha) * a + alpha * b, start.variables, loaded.variables)
  return dataclasses.replace(loaded, variables=variables)


def make_apply(module: nn.Module) -> Callable[[Any, jax.Array], jax.Array]:
  """A jitted `(variables, images) -> restored`: NHWC float32 in [0, 1] in and out (the output clipped to it).

  The generator runs in inference mode (batch norm with its running statistics, no dropout). Networks that need
  sides divisible by some number (a U-Net halves its input once per level) declare it as `size_multiple`; inputs
  are reflect-padded up to it and the output cropped back, so any image size works. Compiles once per input
  shape; tile large images to a fixed size to reuse one compilation.
  """
  multiple = int(getattr(module, "size_multiple", 1))

  @jax.jit
  def apply(variables: Any, images: jax.Array) -> jax.Array:
    height, width = images.shape[1:3]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h or pad_w:
      mode = "reflect" if min(height, width) > max(pad_h, pad_w) else "edge"
      images = jnp.pad(images, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode=mode)
    restored = module.apply(variables, images, train=False).astype(jnp.float32)
    scale_h, scale_w = restored.shape[1] // images.shape[1], restored.shape[2] // images.shape[2]
    return jnp.clip(restored[:, :height * scale_h, :width * scale_w], 0.0, 1.0)

  return apply


def _abstract_state(config: ml_collections.ConfigDict, generator: nn.Module, discriminator: nn.Module) -> Any:
  """Shapes and dtypes of the GANState the run saved, placed on this process's first device."""
  shapes = jax.eval_shape(functools.partial(create_gan_state, config, generator, discriminator), jax.random.key(0))
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), shapes)
