"""The PyTorch room: what headroom does inside a PyTorch process.

- allocator: headroom's pool as PyTorch's CUDA allocator (headroom.torch is
  an alias of it), PYTORCH_CUDA_ALLOC_CONF strings, the pools' statistics.
- registry: residency for torch.nn.Modules under a byte budget (Registry),
  with placement (where tensors live, how a module splits into groups),
  reclaim (the open registries, the pools' reclaimer, tags) and holders
  (who still holds memory an offload should have returned).
- estimate: bytes of a safetensors file or a module before loading.
- stages: memory growth per named stage.
- device_choice: select_device(), the GPU if the work fits, else the CPU.
- vram: this process's and the devices' VRAM readings.

torch is imported inside the functions that need it, never at import, so
``import headroom`` works without PyTorch. No module here is named torch.
"""
