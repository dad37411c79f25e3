"""The shared model's own /diagnostics status when one node serves several cameras: load state, backend, batching
and how many frames each camera got (the fairness of the scheduler, visible in the field)."""
from __future__ import annotations

from mgeo_ros.ros.diagnostics import LEVEL_ERROR, LEVEL_OK, LEVEL_WARN, stage_key_values, summarize
from mgeo_ros.runtime.batching import SharedModelStats


def model_key_values(model_status: str, model_error: str, backend: str, max_batch: int,
                     shared: SharedModelStats | None) -> list[tuple[str, str]]:
    """Flat (key, value) pairs for the model status."""
    kv = [('model_status', model_status), ('backend', backend), ('max_batch', str(max_batch))]
    if model_error:
        kv.append(('model_error', model_error))
    if shared is not None:
        with shared.lock:
            forwards, frames, errors = shared.forwards, shared.frames, shared.errors
            sizes = dict(shared.batch_sizes)
            served = dict(shared.served)
            ms = list(shared.forward_ms)
        kv += [('forwards', str(forwards)), ('frames', str(frames)), ('forward_errors', str(errors)),
               ('mean_batch', f'{frames / forwards:.2f}' if forwards else '0')]
        kv += [(f'batches_of.{n}', str(c)) for n, c in sorted(sizes.items())]
        kv += [(f'frames_served.{cam}', str(c)) for cam, c in sorted(served.items())]
        if ms:  # the same keys as every camera's stages
            kv += stage_key_values('forward_batch', summarize(ms))
    return kv


def model_diagnostic_status(name: str, model_status: str, model_error: str, backend: str, max_batch: int,
                            shared: SharedModelStats | None):
    """One DiagnosticStatus for the model all cameras share."""
    from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

    if model_status == 'error':
        level, message = LEVEL_ERROR, f'model not loaded: {model_error}'
    elif model_status != 'ready':
        level, message = LEVEL_WARN, model_status
    else:
        level, message = LEVEL_OK, 'serving'
    status = DiagnosticStatus(name=name, hardware_id=backend or 'model', message=message)
    status.level = bytes([level])
    status.values = [KeyValue(key=k, value=v)
                     for k, v in model_key_values(model_status, model_error, backend, max_batch, shared)]
    return status
