"""headroom: see where GPU and host memory go, and keep inference processes out
of out-of-memory trouble.

This file stays light on purpose: `headroom.trace` (the snapshot importer) is
pure standard library and must import without libheadroom being present."""
