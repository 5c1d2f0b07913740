"""TensorRT engines: building them from ONNX (:mod:`.build`), engine files and their
sidecars (:mod:`.engine_file`), and the TensorRT Python API names of each supported
version (:mod:`.api_surface`, extracted by :mod:`.extract_api`). Calibration frames and the
fp16/INT8 copies of the ONNX are in :mod:`engine.precision`. Only :mod:`.build` and
:mod:`engine.backends.trt` import ``tensorrt``, inside functions."""
