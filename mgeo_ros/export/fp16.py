"""FP32 ONNX -> mixed-precision FP16 ONNX, so that FP16 lives in the graph (what a strongly typed TensorRT build,
TensorRT 11 and TensorRT-RTX need: they have no FP16 builder flag).

Convolutions, matmuls and the element-wise work around them run in FP16. These stay FP32, chosen by rules on op
types and graph structure (never by node names, so every model size and preset gets the same treatment):

- op types where FP16 is known to break ViTs: LayerNormalization (and the ops that compute a norm's statistics when
  it is decomposed: ReduceMean, ReduceSumSquare, ReduceL2, Pow, Sqrt, Reciprocal), Softmax, Exp, Log, Sigmoid;
- the *tail*: every node after the last convolution/matmul on its way to an output (the `exp` remap of z and the
  x·z, y·z products, the mask sigmoid, the normal normalisation, the final upsampling to the input size);
- the *per-image head*: the nodes that only feed outputs without spatial size (the metric-scale MLP on the CLS
  token and the token slicing in front of it);
- shape arithmetic: nodes whose float results never reach an output through float tensors.

Graph inputs and outputs keep FP32; Cast nodes sit at every FP16/FP32 boundary.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

FLOAT, FLOAT16 = 1, 10  # onnx.TensorProto.FLOAT / FLOAT16
HEAVY_OPS = frozenset({'Conv', 'ConvTranspose', 'MatMul', 'Gemm', 'Einsum'})
FP32_OPS = frozenset({'LayerNormalization', 'GroupNormalization', 'InstanceNormalization', 'BatchNormalization',
                      'Softmax', 'LogSoftmax', 'Exp', 'Log', 'Sigmoid', 'ReduceMean', 'ReduceSumSquare', 'ReduceL2',
                      'ReduceSum', 'Pow', 'Sqrt', 'Reciprocal'})
# inputs that are parameters, not data: a Resize's roi/scales (never on the data path, never cast)
PARAM_INPUTS = {'Resize': {1, 2}, 'Upsample': {1}}
# inputs whose float type is independent of the op's data type (never cast)
TYPE_FREE_INPUTS = {**PARAM_INPUTS, 'Cast': {0}, 'CastLike': {0}}
FP16_MAX = 65504.0


@dataclass
class Fp16Report:
    """How many nodes of each precision and why the FP32 ones are FP32 (rule -> count)."""

    fp16_nodes: int
    fp32_nodes: int
    reasons: dict[str, int]
    casts: int


def _float_types(model) -> dict[str, int]:
    """Element type of every tensor name (inputs, initializers, inferred intermediates, outputs)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    types: dict[str, int] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        types[vi.name] = vi.type.tensor_type.elem_type
    for init in model.graph.initializer:
        types[init.name] = init.data_type
    for node in model.graph.node:
        if node.op_type == 'Constant':
            for a in node.attribute:
                if a.name == 'value':
                    types[node.output[0]] = a.t.data_type
    return types


def classify(model) -> tuple[dict[int, str], dict[str, int], dict[str, int]]:
    """node index -> 'fp16' | 'fp32:<rule>' for every node, plus the tensor types and a count per rule."""
    graph = model.graph
    types = _float_types(model)
    nodes = list(graph.node)
    producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    consumers: dict[str, list[int]] = defaultdict(list)
    for i, n in enumerate(nodes):
        for name in n.input:
            if name:
                consumers[name].append(i)
    outputs = [o.name for o in graph.output]

    def is_float(name: str) -> bool:
        return types.get(name) == FLOAT

    # data nodes: a float output reaches a graph output through float tensors only
    data: set[int] = set()
    stack = [producer[o] for o in outputs if o in producer and is_float(o)]
    while stack:
        i = stack.pop()
        if i in data:
            continue
        data.add(i)
        params = PARAM_INPUTS.get(nodes[i].op_type, set())
        for k, name in enumerate(nodes[i].input):
            if k not in params and name in producer and is_float(name):
                stack.append(producer[name])

    # heavy-reaching: a convolution/matmul is downstream (else the node is in the tail)
    reaches_heavy: dict[int, bool] = {}
    for i in reversed(range(len(nodes))):  # ONNX nodes are topologically sorted
        reaches_heavy[i] = any(nodes[c].op_type in HEAVY_OPS or reaches_heavy.get(c, False)
                               for o in nodes[i].output for c in consumers.get(o, ()) if c > i)

    # per-image head: ancestors of outputs without spatial size that no spatial output depends on
    def ancestors(names: list[str]) -> set[int]:
        seen: set[int] = set()
        todo = [producer[n] for n in names if n in producer]
        while todo:
            i = todo.pop()
            if i not in seen:
                seen.add(i)
                todo.extend(producer[x] for x in nodes[i].input if x in producer)
        return seen

    ranks = {o.name: len(o.type.tensor_type.shape.dim) for o in graph.output}
    small = [o for o in outputs if ranks.get(o, 0) <= 2]
    spatial = [o for o in outputs if ranks.get(o, 0) > 2]
    head = ancestors(small) - ancestors(spatial) if small else set()

    plan: dict[int, str] = {}
    counts: dict[str, int] = defaultdict(int)
    for i, n in enumerate(nodes):
        if i not in data:
            rule = 'fp32:shape'
        elif n.op_type in FP32_OPS:
            rule = f'fp32:{n.op_type}'
        elif i in head:
            rule = 'fp32:per-image head'
        elif not reaches_heavy[i] and n.op_type not in HEAVY_OPS:
            rule = 'fp32:tail'
        else:
            rule = 'fp16'
        plan[i] = rule
        counts[rule] += 1
    return plan, types, dict(counts)


def _to_fp16_array(arr: np.ndarray) -> np.ndarray:
    return np.clip(arr, -FP16_MAX, FP16_MAX).astype(np.float16)


def convert_to_fp16(model) -> tuple[object, Fp16Report]:
    """A new ModelProto in mixed precision (see the module docstring) and a report of what went where."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    plan, types, counts = classify(model)
    nodes = list(graph.node)
    storage: dict[str, int] = {name: t for name, t in types.items() if t == FLOAT}  # current float storage

    # node outputs take the node's precision; Cast/ConstantOfShape/Constant attributes follow
    for i, n in enumerate(nodes):
        if plan[i] != 'fp16':
            continue
        for o in n.output:
            if storage.get(o) == FLOAT:
                storage[o] = FLOAT16
        for a in n.attribute:
            if n.op_type == 'Cast' and a.name == 'to' and a.i == FLOAT:
                a.i = FLOAT16
            if n.op_type in ('Constant', 'ConstantOfShape') and a.name == 'value' and a.t.data_type == FLOAT:
                a.t.CopyFrom(numpy_helper.from_array(_to_fp16_array(numpy_helper.to_array(a.t)), a.t.name))

    # initializers used only by fp16 nodes become fp16; shared ones keep fp32 and get a Cast
    inits = {t.name: t for t in graph.initializer}
    init_users: dict[str, set[str]] = defaultdict(set)
    for i, n in enumerate(nodes):
        free = TYPE_FREE_INPUTS.get(n.op_type, set())
        for k, name in enumerate(n.input):
            if name in inits and inits[name].data_type == FLOAT and k not in free:
                init_users[name].add('fp16' if plan[i] == 'fp16' else 'fp32')
    for name, users in init_users.items():
        if users == {'fp16'}:
            t = inits[name]
            t.CopyFrom(numpy_helper.from_array(_to_fp16_array(numpy_helper.to_array(t)), name))
            storage[name] = FLOAT16

    # casts at every boundary (one per tensor and target type)
    new_nodes: list = []
    made: dict[tuple[str, int], str] = {}

    def cast(name: str, to: int) -> str:
        if (name, to) not in made:
            out = f'{name}__to_{"fp16" if to == FLOAT16 else "fp32"}'
            made[(name, to)] = out
            new_nodes.append(helper.make_node('Cast', [name], [out], to=to, name=f'mp_cast_{len(made)}'))
        return made[(name, to)]

    rebuilt: list = []
    for i, n in enumerate(nodes):
        want = FLOAT16 if plan[i] == 'fp16' else FLOAT
        free = TYPE_FREE_INPUTS.get(n.op_type, set())
        new_nodes.clear()
        for k, name in enumerate(n.input):
            if not name or k in free:
                continue
            have = storage.get(name)
            if have in (FLOAT, FLOAT16) and have != want:
                n.input[k] = cast(name, want)
        rebuilt.extend(new_nodes)
        rebuilt.append(n)

    # graph outputs keep fp32: the fp16 producer writes `<name>__fp16`, a Cast restores the name
    output_casts = 0
    for out in graph.output:
        if storage.get(out.name) == FLOAT16:
            inner = f'{out.name}__fp16'
            for n in rebuilt:
                for k, o in enumerate(n.output):
                    if o == out.name:
                        n.output[k] = inner
                for k, x in enumerate(n.input):
                    if x == out.name:
                        n.input[k] = inner
            rebuilt.append(helper.make_node('Cast', [inner], [out.name], to=FLOAT, name=f'mp_out_{out.name}'))
            output_casts += 1
    del graph.node[:]
    graph.node.extend(rebuilt)
    del graph.value_info[:]
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model)
    fp16 = sum(1 for r in plan.values() if r == 'fp16')
    return model, Fp16Report(fp16_nodes=fp16, fp32_nodes=len(plan) - fp16, reasons=counts,
                             casts=len(made) + output_casts)
