"""Camera geometry: intrinsics, (un)projection, normals, MoGe focal/shift recovery and robust alignment.

numpy everywhere; torch twins where training needs gradients. `import mgeo_ros.geometry` never imports torch or
rclpy: the focal/shift, normals and alignment modules are loaded on first use of their names.
"""
from mgeo_ros.geometry.intrinsics import Intrinsics
from mgeo_ros.geometry.projection import pixel_rays, project, unproject
from mgeo_ros.geometry.uv import normalized_view_plane_uv, normalized_view_plane_uv_torch

_LAZY = {
    'recover_focal_shift': 'focal_shift',
    'focal_from_fov_x': 'focal_shift',
    'fov_x_from_focal': 'focal_shift',
    'intrinsics_from_focal': 'focal_shift',
    'normalized_intrinsics_from_focal': 'focal_shift',
    'normals_from_depth': 'normals',
    'align_scale': 'alignment',
    'align_points_scale': 'alignment',
    'align_points_scale_z_shift': 'alignment',
    'align_points_scale_xyz_shift': 'alignment',
    'align_points_xyz_shift': 'alignment',
    'align_points_z_shift': 'alignment',
    'align_depth_scale': 'alignment',
    'align_depth_affine': 'alignment',
    'align_affine_lstsq': 'alignment',
    'masked_nearest_resize': 'alignment',
}

__all__ = ['Intrinsics', 'normalized_view_plane_uv', 'normalized_view_plane_uv_torch', 'pixel_rays', 'project',
           'unproject', *_LAZY]


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    import importlib
    value = getattr(importlib.import_module(f'{__name__}.{module}'), name)
    globals()[name] = value
    return value
