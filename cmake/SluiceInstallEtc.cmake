# SluiceInstallEtc.cmake - install-time rules for the two files whose place
# depends on where we install, not on CMAKE_INSTALL_PREFIX alone:
#   - /etc/sluice/sluice.conf: always under /etc (the binary's default path),
#     and never over an operator's edited copy;
#   - the systemd unit: /lib/systemd/system for a /usr install (Debian 12
#     layout, also what the .deb ships), else PREFIX/lib/systemd/system (read
#     by systemd too); ExecStart and friends point at the installed binary.
# Included from an install(CODE) block that sets SL_SOURCE_DIR, SL_BINARY_DIR,
# SL_SBINDIR and SL_UNITDIR. file(INSTALL) prepends $ENV{DESTDIR} itself, so
# DESTINATIONs here are the final paths; existence checks add it by hand.

if(IS_ABSOLUTE "${SL_SBINDIR}")
  set(_sl_sbin "${SL_SBINDIR}")
else()
  set(_sl_sbin "${CMAKE_INSTALL_PREFIX}/${SL_SBINDIR}")
endif()

if(EXISTS "$ENV{DESTDIR}/etc/sluice/sluice.conf")
  message(STATUS "Keeping existing: $ENV{DESTDIR}/etc/sluice/sluice.conf")
else()
  file(INSTALL DESTINATION "/etc/sluice" TYPE FILE
       PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ
       FILES "${SL_SOURCE_DIR}/conf/sluice.conf")
endif()

if(SL_UNITDIR)
  set(_sl_unitdir "${SL_UNITDIR}")
elseif(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  set(_sl_unitdir "/lib/systemd/system")
else()
  set(_sl_unitdir "${CMAKE_INSTALL_PREFIX}/lib/systemd/system")
endif()
if(NOT IS_ABSOLUTE "${_sl_unitdir}")
  set(_sl_unitdir "${CMAKE_INSTALL_PREFIX}/${_sl_unitdir}")
endif()

# The unit names /usr/sbin/sluice; rewrite it only for another prefix.
file(READ "${SL_SOURCE_DIR}/systemd/sluice.service" _sl_unit)
string(REPLACE "/usr/sbin/sluice" "${_sl_sbin}/sluice" _sl_unit "${_sl_unit}")
file(WRITE "${SL_BINARY_DIR}/systemd/sluice.service" "${_sl_unit}")
file(INSTALL DESTINATION "${_sl_unitdir}" TYPE FILE
     PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ
     FILES "${SL_BINARY_DIR}/systemd/sluice.service")
