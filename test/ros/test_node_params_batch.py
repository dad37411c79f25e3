"""Live parameter changes are all or nothing: a batch sent by another node (real rclpy) through the node's
set_parameters service (what `ros2 param set` with several values and `ros2 param load` call) or its
set_parameters_atomically service either changes every value, in the parameters and in the running cameras, or
none."""
from __future__ import annotations

import os

import pytest
from node_harness import NodeHarness, node_in_process, spun_with_helper

pytestmark = pytest.mark.ros


def _set(helper, ns: str, values: dict, atomically: bool) -> tuple[bool, str]:
    """(every value set, the reasons given) for one request to the node's set_parameters(_atomically) service."""
    from rcl_interfaces.srv import SetParameters, SetParametersAtomically
    from rclpy.parameter import Parameter

    kind = SetParametersAtomically if atomically else SetParameters
    name = 'set_parameters_atomically' if atomically else 'set_parameters'
    client = helper.create_client(kind, f'{ns}/mgeo_depth_node/{name}')
    assert client.wait_for_service(timeout_sec=10), f'{name} service not available'
    future = client.call_async(kind.Request(
        parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]))
    assert NodeHarness.wait_for(None, future.done, 10), f'{name} timed out'
    helper.destroy_client(client)
    results = [future.result().result] if atomically else future.result().results
    return all(r.successful for r in results), ' '.join(r.reason for r in results)


@pytest.mark.parametrize('atomically', [False, True])
def test_a_batch_with_one_bad_value_changes_nothing_and_a_good_batch_changes_everything(atomically):
    ns = f'/params{os.getpid()}'
    with node_in_process('-r', f'__ns:={ns}', '-p', 'cameras:=[a,b]', '-p', 'model:=/nonexistent/model.onnx') as node, \
            spun_with_helper(node, 'params_batch_client') as helper:
        scales = [ch.pipeline.session.scale for ch in node.channels]
        before = dict(node.cfg)
        ok, reason = _set(helper, ns, {'scale_smoothing': 0.5, 'max_depth': -1.0}, atomically)
        assert not ok and 'max_depth' in reason, reason
        assert node.cfg == before  # the good value of the refused batch did not apply either
        assert node.get_parameter('scale_smoothing').value == 0.0 and all(s.smoothing == 0.0 for s in scales)

        ok, reason = _set(helper, ns, {'scale_smoothing': 0.5, 'max_depth': 4.0}, atomically)
        assert ok, reason
        assert (node.cfg['scale_smoothing'], node.cfg['max_depth']) == (0.5, 4.0)
        assert node.get_parameter('max_depth').value == 4.0 and all(s.smoothing == 0.5 for s in scales)
