"""float32 -> float16 conversion of a PolypScope ONNX export, decode kept in float32.

Written here rather than taken from ``onnxruntime.transformers.float16`` because that
converter, asked to keep the decode in float32 (``node_block_list``), emits duplicate Cast
node names and an unsorted graph for this model (onnxruntime 1.2x: "two nodes with same
node name"), which no runtime loads.

The network part (every node outside ``/decoder/``) runs in float16: its float initialisers
become float16, a Cast turns the float32 input into float16, and each tensor the network
hands to the decode is cast back to float32. Resize's ``roi``/``scales`` stay float32 (the
ONNX spec requires it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DECODE_PREFIX = "/decoder/"
_FLOAT_ONLY_INPUTS = {"Resize": (1, 2)}  # roi, scales


def decode_node_names(model) -> set[str]:
    names = {n.name for n in model.graph.node if n.name.startswith(DECODE_PREFIX)}
    if not names:
        raise ValueError("no /decoder/ nodes: not a PolypScope export (run polypscope export)")
    return names


def convert_to_fp16(model):
    """A new ModelProto: the network in float16, input/output and decode in float32."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    decode = decode_node_names(model)
    network_nodes = [n for n in graph.node if n.name not in decode]
    produced_by_network = {o for n in network_nodes for o in n.output}
    keep_float = {n.input[i] for n in network_nodes for i in _FLOAT_ONLY_INPUTS.get(n.op_type, ()) if i < len(n.input)}
    used_by_network = {i for n in network_nodes for i in n.input} - keep_float
    used_by_decode = {i for n in graph.node if n.name in decode for i in n.input}

    # Initialisers the network uses become float16 (a float32 twin stays if the decode uses it too).
    for init in list(graph.initializer):
        if init.data_type != TensorProto.FLOAT or init.name not in used_by_network:
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name)
        if init.name in used_by_decode:
            twin = onnx.TensorProto()
            twin.CopyFrom(init)
            twin.name = init.name + "_fp32"
            graph.initializer.append(twin)
            for n in graph.node:
                if n.name in decode:
                    n.input[:] = [twin.name if i == init.name else i for i in n.input]
        init.CopyFrom(half)

    new_nodes = []
    for graph_input in graph.input:
        if graph_input.type.tensor_type.elem_type == TensorProto.FLOAT and graph_input.name in used_by_network:
            half_name = graph_input.name + "_fp16"
            new_nodes.append(helper.make_node("Cast", [graph_input.name], [half_name], name=f"/cast_in/{graph_input.name}",
                                              to=TensorProto.FLOAT16))
            for n in network_nodes:
                n.input[:] = [half_name if i == graph_input.name else i for i in n.input]
    handed_to_decode = produced_by_network & used_by_decode
    for n in graph.node:
        new_nodes.append(n)
        for out in n.output:
            if out in handed_to_decode:
                new_nodes.append(helper.make_node("Cast", [out], [out + "_fp32"], name=f"/cast_out/{out}",
                                                  to=TensorProto.FLOAT))
    for n in graph.node:
        if n.name in decode:
            n.input[:] = [i + "_fp32" if i in handed_to_decode else i for i in n.input]
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.value_info[:]  # stale float32 types; shape inference redoes them
    model = onnx.shape_inference.infer_shapes(model)
    onnx.checker.check_model(model)
    return model


def write_fp16(onnx_in: str | Path, onnx_out: str | Path) -> Path:
    """Convert ``onnx_in`` and write it atomically, its metadata kept plus ``precision: fp16``."""
    import onnx

    from engine.atomic import atomic_write_bytes

    model = convert_to_fp16(onnx.load(str(onnx_in)))
    _set_metadata(model, "precision", "fp16")
    return atomic_write_bytes(Path(onnx_out), model.SerializeToString())


def _set_metadata(model, key: str, value: str) -> None:
    for prop in model.metadata_props:
        if prop.key == key:
            prop.value = value
            return
    entry = model.metadata_props.add()
    entry.key, entry.value = key, value
