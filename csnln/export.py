"""Export a CSNLN checkpoint to ONNX, with dynamic H and W.

    python -m csnln.export --ckpt CKPT --onnx OUT.onnx [--opset N]

The network is traced (torch.onnx's TorchScript exporter) with the torch attention backend: the
Triton kernels are `torch.library` custom ops that ONNX cannot hold. One forward pass over a small
image is traced, so every attention call runs whole (one band: memory grows as (H W)^2; run large
images in tiles, `eval.py --onnx OUT.onnx --tile T`). The file's metadata holds the scale,
n_feats, depth and rgb_range (`onnx_runtime.OnnxNetwork` reads them). Exit status: 0 done, 2 a
user error (one line `csnln.export: error: ...`), 130 interrupted.
"""
import io
import pathlib
import sys
import warnings

import torch

from . import cli
from .checkpoint import load_model
from .config import ConfigError
from .files import atomic_write, writable_dir

MIN_OPSET = 11   # dynamic slices and index_put (the attention's stencils)
METADATA = ("scale", "n_feats", "depth", "rgb_range")


def check_opset(opset):
    if opset < MIN_OPSET:
        raise ConfigError(f"--opset {opset} is not supported: the attention's dynamic slices need opset >= {MIN_OPSET}")


def export_onnx(model, found, path, opset=17):
    """Write `model` (a CSNLN, put on the CPU in fp32 with the torch attention backend) to the ONNX
    file `path` atomically, input "lr" [1, C, H, W] and output "sr" [1, C, sH, sW] with H and W
    dynamic; `found` (checkpoint.infer_model_config) goes into the metadata."""
    import onnx

    check_opset(opset)
    model = model.to("cpu", torch.float32).eval()
    model.configure_attention(backend="torch")
    side = 6 * model.size_multiple
    example = torch.rand(1, found["n_colors"], side, side)
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")   # TracerWarnings: the traced shape checks hold for every multiple
        try:
            torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=opset, input_names=["lr"],
                              output_names=["sr"], dynamic_axes={"lr": {2: "height", 3: "width"},
                                                                 "sr": {2: "out_height", 3: "out_width"}})
        except (RuntimeError, ValueError) as e:
            if "opset" in str(e).lower():
                raise ConfigError(f"--opset {opset} is not supported by torch {torch.__version__}: "
                                  f"{str(e).splitlines()[0]}") from None
            raise
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.helper.set_model_props(proto, {key: str(found[key]) for key in METADATA})
    atomic_write(path, lambda f: f.write(proto.SerializeToString()))


def run(config, explicit):
    """csnln.export: --ckpt -> --onnx."""
    if not config["ckpt"] or not config["onnx"]:
        raise ConfigError("give --ckpt CHECKPOINT and --onnx OUT.onnx")
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ConfigError("export needs the onnx package: pip install -e '.[export]'") from None
    check_opset(config["opset"])
    path = pathlib.Path(config["onnx"])
    if path.is_dir():
        raise ConfigError(f"--onnx {path} is a folder; give the file to write, e.g. {path / 'csnln.onnx'}")
    model, found, _ = load_model(config["ckpt"], attention_backend="torch")
    writable_dir(path.parent, "--onnx folder")
    print("exporting with the torch attention backend (the Triton kernels are custom ops ONNX cannot hold)",
          file=sys.stderr)
    export_onnx(model, found, path, config["opset"])
    print(f"wrote {config['onnx']} (CSNLN x{found['scale']}, n_feats {found['n_feats']}, depth {found['depth']}, "
          f"opset {config['opset']}, dynamic H and W)")
    return 0


def main(argv):
    return cli.main("csnln.export", __doc__, argv, run)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
