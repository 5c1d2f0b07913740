"""Reduced-precision copies of an exported PolypScope ONNX model.

- :mod:`.fp16`: weights and the network in float16, input, output and the box decode kept
  in float32 (the decode turns grid offsets into pixels: float16's 11-bit mantissa would
  cost up to a quarter pixel at 416 px and saturate the exp);
- :mod:`.int8`: explicit quantization (Q/DQ nodes) by ``onnxruntime.quantization``,
  calibrated on TRAINING frames, the output convolutions and the decode left in float;
- :mod:`.parity`: does a reduced-precision model find the same polyps as float32?
  Compared by detections (matched boxes, score drift), not by raw tensors alone.

The same files serve TensorRT (strongly typed networks take their precision from the
ONNX types; TensorRT 11 has no other way) and onnxruntime on the CPU.
"""
