"""mgeo_ros.runtime layer (docs/architecture.md): `Predictor` = preprocess + Backend + postprocess -> `Prediction`."""
from mgeo_ros.runtime.prediction import Prediction

__all__ = ['Prediction', 'Predictor', 'create_backend']


def __getattr__(name):  # lazy, so `from mgeo_ros.runtime import Prediction` stays light
    if name in ('Predictor', 'create_backend'):
        from mgeo_ros.runtime import predictor

        return getattr(predictor, name)
    raise AttributeError(name)
