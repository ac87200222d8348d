"""Run a network exported by `csnln.export` with onnxruntime (CPU), as `inference.upscale` runs a model."""
import pathlib

import numpy as np
import torch

from .config import ConfigError
from .export import METADATA
from .model import ATTENTION_SCALE

WHOLE_MAP = 1 << 62   # the exported attention runs every call in one band (`memory.tile_bytes`)


class OnnxNetwork:
    """An exported CSNLN: float [1, C, H, W] in [0, rgb_range] -> [1, C, sH, sW] (float32, CPU).

    `scale`, `n_feats`, `depth` and `rgb_range` come from the file's metadata; H and W must be
    multiples of `size_multiple`, as for the module. Its attention holds whole maps: run large
    images in tiles."""

    def __init__(self, path):
        try:
            import onnxruntime
        except ImportError:
            raise ConfigError("--onnx needs the onnxruntime package: pip install -e '.[export]'") from None
        path = pathlib.Path(path)
        if not path.is_file():
            raise ConfigError(f"--onnx file not found: {path}")
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3   # errors only: not the constant-folding notes of every load
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own Fail / InvalidGraph / InvalidProtobuf types
            raise ConfigError(f"--onnx {path} is not a readable ONNX model: {str(e).splitlines()[0]}") from None
        props = self.session.get_modelmeta().custom_metadata_map
        missing = [key for key in METADATA if key not in props]
        if missing:
            raise ConfigError(f"--onnx {path} was not written by csnln.export (no {', '.join(missing)} in its metadata)")
        self.scale, self.n_feats, self.depth, self.rgb_range = (int(props[key]) for key in METADATA)
        self.size_multiple = ATTENTION_SCALE[self.scale]
        self.chunk_elements = WHOLE_MAP


    def __call__(self, lr):
        sr = self.session.run(None, {"lr": lr.detach().to("cpu", torch.float32).numpy()})[0]
        return torch.from_numpy(np.ascontiguousarray(sr))
