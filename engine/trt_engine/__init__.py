"""TensorRT engines: building them from ONNX (:mod:`.build`), INT8 calibration data
(:mod:`.calibration`), engine files and their sidecars (:mod:`.engine_file`), and the
TensorRT Python API names of each supported version (:mod:`.api_surface`). Only
:mod:`.build` and :mod:`engine.backends.trt` import ``tensorrt``, inside functions."""
