"""Frontends: foreign model formats translated into kgen IR, and nothing else.

- `torch_module.py`: `kgen.from_torch` (torch.export -> core ATen -> a kgen.nn.Module);
- `fx.py`: the walker from an FX graph of core ATen to kgen values, shared by every torch
  way in; `aten.py`: its op table, one translator per ATen op onto kgen.ops;
- `dynamo.py`: the `torch.compile(backend="kgen")` backend;
- `pt2.py`: reading `.pt2` files (torch.export.save); `model_file.py`: `.pt2` and `.onnx`
  files as MODEL arguments of the `kgen` command;
- `scope.py`: foreign weights placed under their dotted names;
- `onnx/`: `kgen.from_onnx` and the ONNX conformance backend (needs the onnx package).
"""
