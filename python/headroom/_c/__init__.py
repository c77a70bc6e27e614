"""The ctypes room: everything that speaks to libheadroom's C interface.

- lib: loading the library, every prototype and every struct the package
  uses (checked against the library's own layout table), the integer range
  checks and HeadroomError.
- options: the option table (defaults, config file, HEADROOM_* variables).
- pool: the caching allocator (Pool) and the pools behind PyTorch's
  allocator.
- cleanup: the table of what each cleanup mode does.

Nothing here imports torch or another room of the package.
"""
