# Deployment: what `cmake --install` puts where (the binaries, the headers,
# the man page, bash completion, the example config, the systemd unit, the
# container and Kubernetes recipes), and the one library `headroom doctor`
# uses directly.
include(GNUInstallDirs)

# doctor checks the history database on a read-only SQLite connection of its
# own (opening it through the history module would migrate its schema).
target_link_libraries(headroom_cli PRIVATE PkgConfig::SQLITE3)
