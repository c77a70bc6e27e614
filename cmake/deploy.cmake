# Deployment: what `cmake --install` puts where (the binaries, the headers,
# the man page, bash completion, the example config, the systemd unit, the
# container and Kubernetes recipes), and the one library `headroom doctor`
# uses directly.
include(GNUInstallDirs)

# doctor checks the history database on a read-only SQLite connection of its
# own (opening it through the history module would migrate its schema).
target_link_libraries(headroom_cli PRIVATE PkgConfig::SQLITE3)

# Destinations are relative to the prefix, so `cmake --install BUILD --prefix
# DIR` places everything under DIR. The systemd unit is written at install
# time, when the prefix (and so the binary's path in ExecStart) is known;
# systemd reads units from lib/systemd/system under /usr and /usr/local, so
# that is where it goes whatever the platform's libdir.
set(HR_PKG ${PROJECT_SOURCE_DIR}/packaging)
install(FILES ${HR_PKG}/man/headroom.1 DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)
install(FILES ${HR_PKG}/completion/headroom.bash
  DESTINATION ${CMAKE_INSTALL_DATADIR}/bash-completion/completions RENAME headroom)
install(FILES ${HR_PKG}/headroom.conf.example
  DESTINATION ${CMAKE_INSTALL_SYSCONFDIR}/headroom)
install(CODE "
  set(HR_BINDIR \"\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_BINDIR}\")
  configure_file(\"${HR_PKG}/systemd/headroom.service.in\"
    \"${PROJECT_BINARY_DIR}/packaging/headroom.service\" @ONLY)")
install(FILES ${PROJECT_BINARY_DIR}/packaging/headroom.service
  DESTINATION lib/systemd/system)
install(FILES ${HR_PKG}/container/Containerfile ${HR_PKG}/container/README.md
  DESTINATION ${CMAKE_INSTALL_DOCDIR}/container)
install(FILES ${HR_PKG}/kubernetes/headroom-daemonset.yaml
  DESTINATION ${CMAKE_INSTALL_DOCDIR}/kubernetes)
