# SluiceInstall.cmake - what `cmake --install` puts where (issue 4, part 5).
#
#   PREFIX/sbin/sluice                 (the install(TARGETS) rule above)
#   /etc/sluice/sluice.conf            never overwritten if present
#   /lib/systemd/system/sluice.service for PREFIX /usr, else PREFIX/lib/...
#   PREFIX/share/man/man8/sluice.8.gz, man5/sluice.conf.5.gz
#   PREFIX/share/doc/sluice/README.md, examples/sluice.conf, examples/grafana-dashboard.json
#
# Included at the end of the top-level CMakeLists.txt.

set(SLUICE_SYSTEMD_UNITDIR "" CACHE STRING
    "Where to install sluice.service (empty: /lib/systemd/system for prefix /usr, else PREFIX/lib/systemd/system)")

# Man pages, gzipped at build time when gzip is there (Debian policy 12.1).
find_program(SLUICE_GZIP gzip)
set(_sl_man_pages sluice.8 sluice.conf.5)
set(_sl_man_outputs)
foreach(page IN LISTS _sl_man_pages)
  set(src ${CMAKE_SOURCE_DIR}/man/${page})
  if(SLUICE_GZIP)
    set(out ${CMAKE_BINARY_DIR}/man/${page}.gz)
    add_custom_command(OUTPUT ${out}
      COMMAND ${CMAKE_COMMAND} -DGZIP=${SLUICE_GZIP} -DSRC=${src} -DDST=${out}
              -P ${CMAKE_SOURCE_DIR}/cmake/GzipFile.cmake
      DEPENDS ${src} ${CMAKE_SOURCE_DIR}/cmake/GzipFile.cmake
      COMMENT "Compressing man page ${page}"
      VERBATIM)
  else()
    set(out ${src})
  endif()
  list(APPEND _sl_man_outputs ${out})
  string(REGEX MATCH "[0-9]$" section ${page})
  install(FILES ${out} DESTINATION ${CMAKE_INSTALL_MANDIR}/man${section})
endforeach()
add_custom_target(sluice_man ALL DEPENDS ${_sl_man_outputs})

install(FILES ${CMAKE_SOURCE_DIR}/README.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(FILES ${CMAKE_SOURCE_DIR}/grafana/sluice.json DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples
        RENAME grafana-dashboard.json)
install(FILES ${CMAKE_SOURCE_DIR}/conf/sluice.conf
        DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples)

# The config and the unit are placed at install time: see the script.
install(CODE "
set(SL_SOURCE_DIR \"${CMAKE_SOURCE_DIR}\")
set(SL_BINARY_DIR \"${CMAKE_BINARY_DIR}\")
set(SL_SBINDIR \"${CMAKE_INSTALL_SBINDIR}\")
set(SL_UNITDIR \"${SLUICE_SYSTEMD_UNITDIR}\")
include(\"${CMAKE_SOURCE_DIR}/cmake/SluiceInstallEtc.cmake\")
")
