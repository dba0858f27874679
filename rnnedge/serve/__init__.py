"""Serve an export folder: a Triton model repository (`triton.write_repository`), a local
`tritonserver` (`server.local_server`), Triton clients (`client`), load tests (`loadtest`), ORT format (`ort`).

Takes an export folder (manifest.json, model.onnx); gives repositories, servers and BenchRows.
Needs the `serve` extra (tritonclient, nvidia-pytriton) except `ort`; never TensorFlow.
"""
