"""The benchmark: FLOP counts against the analytic count of the networks, and one honest run of the tiny recipe."""

import functools

import jax
import numpy as np
import pytest

from configs import sr_wgangp
from restore_jax import bench, models, parallel, train
from restore_jax.state import create_gan_state


def analytic_rrdb_forward_flops(lr_size: int, num_feat: int, num_block: int, num_grow_ch: int,
                                in_ch: int = 3, out_ch: int = 3) -> int:
  """2 k^2 c_in c_out H W per 3x3 conv of ESRGAN's RRDBNet at x4 (Wang et al. 2018, fig. 4): convolutions only."""
  conv = lambda c_in, c_out, side: 2 * 9 * c_in * c_out * side * side
  s = lr_size
  dense_block = sum(conv(num_feat + i * num_grow_ch, num_grow_ch, s) for i in range(4))
  dense_block += conv(num_feat + 4 * num_grow_ch, num_feat, s)
  return (conv(in_ch, num_feat, s) + num_block * 3 * dense_block + conv(num_feat, num_feat, s)  # first, trunk, body
          + conv(num_feat, num_feat, 2 * s) + conv(num_feat, num_feat, 4 * s)  # two upsampling stages
          + conv(num_feat, num_feat, 4 * s) + conv(num_feat, out_ch, 4 * s))  # conv_hr, conv_last


def test_analytic_count_is_esrgans():
  """The hand count itself: ~36.7 GFLOP per 32x32 input at ESRGAN's size (23 blocks, 64 features, growth 32)."""
  assert analytic_rrdb_forward_flops(32, 64, 23, 32) == pytest.approx(36.7e9, rel=2e-3)


@pytest.mark.parametrize("num_block, num_feat, num_grow_ch", [(23, 64, 32), (2, 32, 16)])
def test_generator_forward_flops_within_5_percent_of_analytic(num_block, num_feat, num_grow_ch):
  config = sr_wgangp.get_config("bench")
  config.data.crop_size = 128  # A 32x32 input.
  config.generator.update(num_block=num_block, num_feat=num_feat, num_grow_ch=num_grow_ch)
  counted = bench.generator_forward_flops(config)
  expected = analytic_rrdb_forward_flops(32, num_feat, num_block, num_grow_ch)
  assert counted == pytest.approx(expected, rel=0.05)


@pytest.fixture(scope="module")
def result():
  config = sr_wgangp.get_config("tiny")
  return bench.run(config, steps=3, warmup=1, pipeline_batches=2, peak_size=256)


def test_run_reports_consistent_numbers(result):
  t = result["step_time_s"]
  assert len(t["all"]) == 3 and t["min"] <= t["median"] <= t["max"]
  assert result["images_per_sec"] == pytest.approx(8 / t["median"])
  assert result["achieved_flops_per_s"] == pytest.approx(result["flops_per_step"] / t["median"])
  assert result["fraction_of_peak"] == pytest.approx(result["achieved_flops_per_s"] / result["peak_flops_per_s"])
  assert result["compilations_while_timing"] == 0
  assert result["compile_s"] > 0 and result["pipeline_images_per_sec"] > 0 and result["peak_rss_mb"] > 100
  assert result["device_count"] == 8 and result["platform"] == "cpu"
  assert result["shape"] == {"batch_size": 8, "hr_size": 32, "n_critic": 1, "generator": "rrdb",
                             "discriminator": "vgg_critic", "num_block": 1, "num_feat": 8, "num_grow_ch": 4,
                             "discriminator_num_feat": 8}
  # A step runs the generator forward and backward (>= 3 forwards' worth) on each of its 8 images.
  assert result["flops_per_step"] > 3 * 8 * result["generator_forward_flops_per_image"]
  table = bench.format_table(result)
  assert f"{result['images_per_sec']:.3f}" in table and "fraction_of_peak" in table


def test_flops_are_the_whole_step_on_any_number_of_devices():
  """XLA's count of the step on 8 devices (per device, times 8) matches its count on one device."""
  config = sr_wgangp.get_config("tiny")
  generator = models.make_generator(config.generator)
  discriminator = models.make_discriminator(config.discriminator)
  counts = []
  for devices in (jax.devices()[:1], jax.devices()):
    mesh = parallel.make_mesh(devices)
    state = jax.eval_shape(functools.partial(create_gan_state, config, generator, discriminator),
                           jax.random.key(0))
    batch = {"input": jax.ShapeDtypeStruct((1, 8, 8, 8, 3), np.float32),
             "target": jax.ShapeDtypeStruct((1, 8, 32, 32, 3), np.float32)}
    step = train.jit_train_step(config, generator, discriminator, mesh)
    counts.append(bench.compiled_flops(step.lower(state, batch, {}).compile()) * len(devices))
  # The replicated parts (optimizer updates, EMA) are counted once per device: a few percent at this size.
  assert counts[1] == pytest.approx(counts[0], rel=0.1)


def test_peak_is_a_matrix_product_rate():
  peak = bench.peak_flops_per_s(128, repeats=2)
  assert 1e8 < peak < 1e15
