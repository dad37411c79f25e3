"""Inference backends behind one interface (`base.Backend`); each module imports its engine lazily."""
from mgeo_ros.runtime.backends.base import Backend, RawOutput

__all__ = ['Backend', 'RawOutput']
