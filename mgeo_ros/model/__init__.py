"""MoGe-2 in PyTorch (DINOv2 ViT encoder, conv neck, point/mask/normal heads, metric-scale MLP) and its
checkpoints: the official release `.pt` and the project's safetensors directory. Structure comes from the config."""
from mgeo_ros.model.checkpoint import build_model, load_checkpoint, save_checkpoint
from mgeo_ros.model.configs import preset
from mgeo_ros.model.moge2 import MoGeModel

__all__ = ['MoGeModel', 'build_model', 'load_checkpoint', 'save_checkpoint', 'preset']
