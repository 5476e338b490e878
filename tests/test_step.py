"""The GAN step: same result on 1 and 8 devices, n_critic updates, EMA, loss switches, sharded compile."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from configs import sr_wgangp
from restore_jax import models, parallel
from restore_jax.state import create_gan_state
from restore_jax.step import make_train_step


def _config(**overrides):
  c = sr_wgangp.get_config("tiny")
  c.batch_size = 8
  c.optim.n_critic = 2
  c.optim.eps = 1e-3  # Keeps float rounding in ~0 gradient components from being scaled up to full Adam steps.
  for k, v in overrides.items():
    parent, _, leaf = k.rpartition(".")
    (c if not parent else functools.reduce(getattr, parent.split("."), c))[leaf] = v
  return c


def _batch(config, seed=0):
  """n_critic batches stacked on a leading axis (what the loop hands the step): targets and their 4x4 means."""
  rng = np.random.default_rng(seed)
  n, size = config.optim.n_critic, config.data.crop_size
  target = rng.random((n, config.batch_size, size, size, 3), dtype=np.float32)
  small = size // config.task.scale
  inputs = target.reshape(n, config.batch_size, small, 4, small, 4, 3).mean(axis=(3, 5))
  return {"input": inputs, "target": target}


def _run(config, devices, batch, steps=2):
  """Builds state and step on a mesh over `devices` and runs `steps` steps of the same global batch.

  Returns the final state, each step's metrics, and the parameters of both networks (and the rng) before each
  step and after the last.
  """
  mesh = parallel.make_mesh(devices)
  generator = models.make_generator(config.generator)
  discriminator = models.make_discriminator(config.discriminator)
  repl, shard = parallel.replicated(mesh), parallel.batch_sharded(mesh, leading_axes=1)
  state = jax.jit(functools.partial(create_gan_state, config, generator, discriminator), out_shardings=repl)(
      jax.random.key(config.seed)
  )
  params = [jax.device_get(state.generator.params)]
  critics = [jax.device_get(state.discriminator.params)]
  rngs = [jax.device_get(jax.random.key_data(state.rng))]
  step = jax.jit(
      make_train_step(config, generator, discriminator),
      in_shardings=(repl, shard, repl),
      out_shardings=(repl, repl),
      donate_argnums=(0,),
  )
  global_batch = parallel.to_global_batch(batch, mesh, leading_axes=1)
  assert global_batch["target"].sharding.spec == shard.spec
  history = []
  for _ in range(steps):
    state, metrics = step(state, global_batch, {})
    history.append(jax.device_get(metrics))
    params.append(jax.device_get(state.generator.params))
    critics.append(jax.device_get(state.discriminator.params))
    rngs.append(jax.device_get(jax.random.key_data(state.rng)))
  return state, history, params, critics, rngs


@pytest.fixture(scope="module")
def config():
  # Step 1 is pixel-only pre-training, step 2 a GAN step: the runs below cover both phases.
  return _config(**{"loss.adversarial_start_step": 1})


@pytest.fixture(scope="module")
def one_and_eight(config):
  assert jax.device_count() == 8, "conftest must give 8 fake CPU devices"
  batch = _batch(config)
  return _run(config, jax.devices()[:1], batch), _run(config, jax.devices(), batch)


def test_one_device_and_eight_devices_agree(one_and_eight):
  (state1, hist1, *_), (state8, hist8, *_) = one_and_eight
  assert state8.generator.params is not None
  for tree1, tree8 in [
      (state1.generator.params, state8.generator.params),
      (state1.discriminator.params, state8.discriminator.params),
      (state1.ema_params, state8.ema_params),
  ]:
    for a, b in zip(jax.tree.leaves(tree1), jax.tree.leaves(tree8), strict=True):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-6)
  for m1, m8 in zip(hist1, hist8):
    for k in ("g_loss", "d_loss", "gradient_penalty", "psnr"):
      np.testing.assert_allclose(m1[k], m8[k], rtol=1e-4, atol=1e-5)
  # The state really lives on all eight devices, replicated.
  leaf = jax.tree.leaves(state8.generator.params)[0]
  assert len(leaf.sharding.device_set) == 8 and leaf.sharding.is_fully_replicated


def test_step_reports_every_term(one_and_eight):
  (_, hist, *_), _ = one_and_eight
  expected = {"g_loss", "g_mse", "g_adversarial", "d_loss", "d_adversarial", "gradient_penalty", "wasserstein",
              "g_grad_norm", "d_grad_norm", "psnr", "psnr_baseline", "lr_g", "lr_d",
              "nonfinite", "nonfinite_steps", "consecutive_nonfinite"}
  assert expected <= set(hist[0])
  for k in expected:
    assert np.isfinite(hist[0][k]), k
  # The critic loss is its adversarial part plus gp_weight times the penalty.
  m = hist[0]
  np.testing.assert_allclose(m["d_loss"], m["d_adversarial"] + 10.0 * m["gradient_penalty"], rtol=1e-5)
  np.testing.assert_allclose(m["wasserstein"], -m["d_adversarial"], rtol=1e-5, atol=1e-6)
  # Clean steps are applied, and count as no non-finite step.
  assert [(h["nonfinite"], h["nonfinite_steps"], h["consecutive_nonfinite"]) for h in hist] == [(0.0, 0, 0)] * 2


def test_n_critic_updates_and_ema(config, one_and_eight):
  """After two steps: 2 * n_critic critic updates, 2 generator updates, and the EMA recursion computed by hand."""
  (state2, _, params, *_), _ = one_and_eight
  assert int(state2.step) == 2
  assert int(state2.discriminator.step) == 2 * config.optim.n_critic
  assert int(state2.generator.step) == 2
  d = config.ema_decay
  for e2, p0, p1, p2 in zip(*(jax.tree.leaves(t) for t in (state2.ema_params, *params)), strict=True):
    e1 = d * p0 + (1 - d) * p1  # EMA starts at the initial parameters.
    np.testing.assert_allclose(np.asarray(e2), d * e1 + (1 - d) * p2, rtol=1e-5, atol=1e-7)
  assert not np.allclose(jax.tree.leaves(params[0])[0], jax.tree.leaves(params[2])[0])


def test_generator_update_is_adam_on_pixel_loss_before_gan_phase(config, one_and_eight):
  """Before adversarial_start_step the generator takes a plain Adam step on the pixel loss alone."""
  (_, hist, params, *_), _ = one_and_eight
  assert hist[0]["adversarial_on"] == 0.0 and hist[1]["adversarial_on"] == 1.0
  batch = _batch(config)
  generator = models.make_generator(config.generator)

  def mse(p):  # On the last of the n_critic batches: the one the generator update uses.
    out = generator.apply({"params": p}, batch["input"][-1])
    return jnp.mean((out - batch["target"][-1]) ** 2)

  tx = optax.adam(config.optim.g_learning_rate, b1=config.optim.b1, b2=config.optim.b2, eps=config.optim.eps)
  grads = jax.grad(mse)(params[0])
  updates, _ = tx.update(grads, tx.init(params[0]), params[0])
  expected = optax.apply_updates(params[0], updates)
  for a, b in zip(jax.tree.leaves(params[1]), jax.tree.leaves(expected), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(hist[0]["g_loss"], float(mse(params[0])), rtol=1e-5)


class TorchVGGCritic(torch.nn.Module):
  """The VGG-style critic written in PyTorch (NCHW), with the weights of the flax one copied in."""

  def __init__(self, params):
    super().__init__()
    stages = sorted({int(name[4]) for name in params if name.startswith("conv")})
    self.convs = torch.nn.ModuleList()
    for stage in stages:
      for part, (stride, padding) in ((0, (1, 1)), (1, (2, 1))):
        kernel = np.asarray(params[f"conv{stage}_{part}"]["kernel"])  # HWIO.
        conv = torch.nn.Conv2d(kernel.shape[2], kernel.shape[3], kernel.shape[:2], stride=stride, padding=padding)
        conv.weight.data = torch.tensor(kernel.transpose(3, 2, 0, 1).copy())
        conv.bias.data = torch.tensor(np.asarray(params[f"conv{stage}_{part}"]["bias"]))
        self.convs.append(conv)
    self.linears = torch.nn.ModuleList()
    for name in ("linear1", "linear2"):
      kernel = np.asarray(params[name]["kernel"])  # (in, out).
      linear = torch.nn.Linear(*kernel.shape)
      linear.weight.data = torch.tensor(kernel.T.copy())
      linear.bias.data = torch.tensor(np.asarray(params[name]["bias"]))
      self.linears.append(linear)

  def forward(self, images_nhwc):
    x = images_nhwc.permute(0, 3, 1, 2)
    for conv in self.convs:
      x = torch.nn.functional.leaky_relu(conv(x), 0.2)
    x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # Flattened in HWC order, as the NHWC network does.
    x = torch.nn.functional.leaky_relu(self.linears[0](x), 0.2)
    return self.linears[1](x)[:, 0]

  def flax_params(self):
    """The weights back in the flax layout, as numpy."""
    out, convs = {}, iter(self.convs)
    for index in range(len(self.convs)):
      conv = next(convs)
      out[f"conv{index // 2}_{index % 2}"] = {"kernel": conv.weight.detach().numpy().transpose(2, 3, 1, 0),
                                              "bias": conv.bias.detach().numpy()}
    for name, linear in zip(("linear1", "linear2"), self.linears):
      out[name] = {"kernel": linear.weight.detach().numpy().T, "bias": linear.bias.detach().numpy()}
    return out


def test_critic_updates_match_torch_autograd_and_adam(config, one_and_eight):
  """The first step's n_critic = 2 WGAN-GP critic updates, redone in PyTorch: the same VGG critic, the loss
  mean D(fake) - mean D(real) + 10 mean_i (||grad_x D(x_i)|| - 1)^2 with the penalty's gradient taken by a double
  backward (create_graph), and torch.optim.Adam, one update on each of the two batches."""
  (_, hist, g_params, critics, rngs), _ = one_and_eight
  batch = _batch(config)
  generator = models.make_generator(config.generator)
  n = config.optim.n_critic
  # The step's random stream: split(state.rng, 4)[1] gives one key per critic update, each split in four; the
  # last of those draws one interpolation weight per image (WGAN-GP's epsilon ~ U[0, 1)).
  critic_rng = jax.random.split(jax.random.wrap_key_data(rngs[0]), 4)[1]
  mixes = [np.asarray(jax.random.uniform(jax.random.split(key, 4)[3], (config.batch_size, 1, 1, 1)))
           for key in jax.random.split(critic_rng, n)]

  critic = TorchVGGCritic(critics[0])
  adam = torch.optim.Adam(critic.parameters(), lr=config.optim.d_learning_rate,
                          betas=(config.optim.b1, config.optim.b2), eps=config.optim.eps)
  for k in range(n):
    fake = torch.tensor(np.asarray(generator.apply({"params": g_params[0]}, batch["input"][k], train=True)))
    real = torch.tensor(batch["target"][k])
    mix = torch.tensor(mixes[k])
    between = (mix * real + (1 - mix) * fake).requires_grad_(True)
    (gradient,) = torch.autograd.grad(critic(between).sum(), between, create_graph=True)
    penalty = ((gradient.flatten(1).norm(dim=1) - 1) ** 2).mean()
    loss = critic(fake).mean() - critic(real).mean() + config.loss.gp_weight * penalty
    adam.zero_grad()
    loss.backward()
    adam.step()
  np.testing.assert_allclose(hist[0]["d_loss"], loss.item(), rtol=1e-4)  # The last update's loss is reported.
  np.testing.assert_allclose(hist[0]["gradient_penalty"], penalty.item(), rtol=1e-4)

  want = critic.flax_params()
  for path, got in jax.tree_util.tree_leaves_with_path(critics[1]):
    name, leaf = path[0].key, path[1].key
    start = np.asarray(critics[0][name][leaf])
    moved_torch, moved_jax = want[name][leaf] - start, np.asarray(got) - start
    if (name, leaf) == ("linear2", "bias"):
      # A constant added to every score cancels in mean D(fake) - mean D(real) and leaves grad_x D unchanged:
      # the critic's output bias has no gradient at all, in either framework.
      assert not moved_torch.any() and not moved_jax.any()
      continue
    assert np.abs(moved_torch).max() > 1e-5, (name, leaf)  # Every other array took real steps ...
    np.testing.assert_allclose(moved_jax, moved_torch, rtol=1e-3, atol=2e-8, err_msg=f"{name}/{leaf}")  # ... equal.


def test_batch_not_divisible_by_devices_is_a_clear_error():
  mesh = parallel.make_mesh()
  with pytest.raises(ValueError, match="divisible by the number of devices"):
    parallel.check_batch_size(12, mesh)
