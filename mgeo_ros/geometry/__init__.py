"""Camera geometry: intrinsics, (un)projection, normals and MoGe focal/shift recovery. numpy; torch twins optional."""
from mgeo_ros.geometry.intrinsics import Intrinsics
from mgeo_ros.geometry.projection import pixel_rays, project, unproject
from mgeo_ros.geometry.uv import normalized_view_plane_uv, normalized_view_plane_uv_torch

__all__ = ['Intrinsics', 'normalized_view_plane_uv', 'normalized_view_plane_uv_torch', 'pixel_rays', 'project', 'unproject', 'recover_focal_shift', 'normals_from_points']


def __getattr__(name):  # lazy: these modules are written by the focal/shift and normals work
    if name == 'recover_focal_shift':
        from mgeo_ros.geometry.focal_shift import recover_focal_shift
        return recover_focal_shift
    if name == 'normals_from_points':
        from mgeo_ros.geometry.normals import normals_from_points
        return normals_from_points
    raise AttributeError(name)
