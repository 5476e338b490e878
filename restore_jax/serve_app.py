"""The web page: upload a photo, pick a model, compare before and after with a slider, download the result.

Built with Gradio Blocks around restore_jax.serve_requests.Restorer. Requests are queued and run one at a time
(a second photo waits rather than doubling the memory in use); a bad request becomes a message on the page.
Set GRADIO_ANALYTICS_ENABLED=False before gradio is imported (restore_jax.serve does) so the page fetches nothing
from outside.
"""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pathlib  # noqa: E402

import gradio as gr  # noqa: E402
from absl import logging  # noqa: E402

from restore_jax import restore  # noqa: E402
from restore_jax.serve_requests import Model, RequestError, Restorer  # noqa: E402

API_NAME = "restore"  # gradio_client: Client(url).predict(model, handle_file(path), None, 512, False, api_name="/restore")
TILE_CHOICES = (0, 128, 256, 512, 1024)  # 0 restores the photo whole.


def example_photos() -> list[str]:
  """Photographs that ship inside scikit-image (no download), offered as examples on the page."""
  try:
    import skimage.data  # pylint: disable=g-import-not-at-top  # Optional: examples only.
  except ImportError:
    return []
  folder = pathlib.Path(skimage.data.__file__).parent
  return [str(folder / name) for name in ("chelsea.png", "coffee.png", "rocket.jpg") if (folder / name).exists()]


class PhotoUpload(gr.Image):
  """gr.Image whose unreadable uploads become a message on the page instead of Gradio's generic error."""

  def get_block_name(self) -> str:
    return "image"  # The same browser component as gr.Image.

  def preprocess(self, payload):
    try:
      return super().preprocess(payload)
    except Exception as e:  # pylint: disable=broad-except  # Pillow raises several types for a non-image.
      name = getattr(payload, "orig_name", None) or "The upload"
      logging.warning("request refused: %s is not an image (%s)", name, e)
      raise gr.Error(f"{name} is not an image this server can read.") from e


def build_app(restorer: Restorer, models: list[Model], *, default_tile: int = restore.DEFAULT_TILE) -> gr.Blocks:
  """The page's Blocks; launch it with `.queue(default_concurrency_limit=1).launch(...)` (restore_jax.serve)."""
  names = [m.name for m in models]
  uses_mask = {m.name: bool(m.generator is not None and m.generator.task.use_mask) for m in models}

  def run(model_name: str, photo: str | None, mask: str | None, tile: int, self_ensemble: bool,
          progress: gr.Progress = gr.Progress()):
    report = lambda done, total: progress(done / total, desc=f"tile {done} of {total}")
    try:
      result = restorer(model_name, photo, mask, tile=int(tile), self_ensemble=bool(self_ensemble),
                        progress=report)
    except RequestError as e:
      logging.warning("request refused: %s", e)
      raise gr.Error(str(e)) from e
    return (str(result.before), str(result.after)), str(result.after), result.summary()

  def mask_visibility(model_name: str):
    return gr.update(visible=uses_mask.get(model_name, False))

  with gr.Blocks(title="restore_jax") as page:
    gr.Markdown("# restore_jax\nUpload a photo (drop, paste or pick an example), choose a model, press "
                "**Restore**, then drag the slider to compare.")
    with gr.Row():
      with gr.Column():
        model = gr.Dropdown(choices=names, value=names[0] if names else None, label="Model", elem_id="model")
        photo = PhotoUpload(type="filepath", image_mode=None, sources=["upload", "clipboard"], label="Photo",
                            elem_id="photo")
        mask = PhotoUpload(type="filepath", image_mode=None, sources=["upload", "clipboard"],
                           label="Mask of missing pixels (white = missing; default: the photo's white pixels)",
                           visible=uses_mask.get(names[0], False) if names else False, elem_id="mask")
        with gr.Row():
          tile = gr.Dropdown(choices=list(TILE_CHOICES), value=default_tile if default_tile in TILE_CHOICES else 0,
                             label="Tile size (input pixels; 0 = whole photo)", elem_id="tile")
          ensemble = gr.Checkbox(value=False, label="Self-ensemble (8 flips/rotations, 8x slower)",
                                 elem_id="ensemble")
        button = gr.Button("Restore", variant="primary", elem_id="restore")
        examples = example_photos()
        if examples:
          gr.Examples(examples=examples, inputs=photo, label="Example photos")
      with gr.Column():
        slider = gr.ImageSlider(type="filepath", label="Before | after", elem_id="slider")
        summary = gr.Textbox(label="Result", interactive=False, elem_id="summary")
        download = gr.File(label="Download the restored photo", interactive=False, elem_id="download")
    model.change(mask_visibility, inputs=model, outputs=mask)
    button.click(run, inputs=[model, photo, mask, tile, ensemble], outputs=[slider, download, summary],
                 api_name=API_NAME)
  return page
