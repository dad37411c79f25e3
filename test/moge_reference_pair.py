"""The reference MoGe-2 model and ours with the same random weights (tiny preset), for the parity tests and for
`make_moge_golden.py`. Needs `reference_dir` to make `import moge` and `import utils3d` work (see
test_model_reference.py); nothing of the reference is shipped."""
from __future__ import annotations

import copy
import functools
import importlib
import os
import sys

import torch

from mgeo_ros.model import build_model, preset


def build_pair(reference_dir: str, seed: int = 0, fp16_exact: bool = False):
    """(reference model, our model), both in eval mode with identical weights. `fp16_exact` rounds every weight to
    a float16-representable value first, so an fp16 checkpoint of ours holds exactly the weights that ran."""
    os.environ.setdefault('XFORMERS_DISABLED', '1')
    if reference_dir not in sys.path:
        sys.path.insert(0, reference_dir)
    v2 = importlib.import_module('moge.model.v2')
    hub = importlib.import_module('moge.model.dinov2.hub.backbones')
    vt = importlib.import_module('moge.model.dinov2.models.vision_transformer')
    layers = importlib.import_module('moge.model.dinov2.layers')
    torch.manual_seed(seed)
    cfg = preset('tiny')
    spec = cfg['encoder']['backbone']

    def custom_vit(pretrained=False):   # the reference only knows hub names; build the same small ViT there
        return vt.DinoVisionTransformer(
            img_size=14 * spec['pos_grid'], patch_size=spec['patch_size'], embed_dim=spec['embed_dim'],
            depth=spec['depth'], num_heads=spec['num_heads'], mlp_ratio=spec['mlp_ratio'], init_values=1.0,
            block_chunks=0, block_fn=functools.partial(layers.NestedTensorBlock, attn_class=layers.MemEffAttention))
    hub.mgeo_test_vit = custom_vit
    ref_cfg = copy.deepcopy(cfg)
    ref_cfg['encoder']['backbone'] = 'mgeo_test_vit'
    ref = v2.MoGeModel(**ref_cfg).eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith('gamma'):
                p.copy_(torch.rand_like(p) * 0.5 + 0.1)
        if fp16_exact:
            for t in ref.state_dict().values():  # parameters and buffers
                if t.is_floating_point():
                    t.copy_(t.half().float())
    ours = build_model(cfg).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours
