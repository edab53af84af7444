"""ONNX export of a pipeline (:mod:`~edgefusion.export.onnx`, W8A16 as QDQ in
:mod:`~edgefusion.export.qdq`) and generation from the export in onnxruntime
(:mod:`~edgefusion.export.runtime`)."""
