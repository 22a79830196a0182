# SluicePackage.cmake - `cpack -G DEB` builds sluice_X.Y.Z_ARCH.deb for
# Debian 12 (issue 4, part 5). Needs dpkg-dev (dpkg-shlibdeps) and file.
#
# The package is staged with DESTDIR (CPACK_SET_DESTDIR) so that the absolute
# /etc and /lib/systemd paths land inside it; /etc/sluice/sluice.conf is a
# conffile, so dpkg keeps an edited copy on upgrade. The maintainer scripts
# in cmake/debian do what dh_installsystemd would: enable the unit, start it
# when systemd is running, stop it on removal, forget it on purge.
# Included at the end of the top-level CMakeLists.txt, after SluiceInstall.

set(SLUICE_PACKAGE_MAINTAINER "sluice maintainers <sluice@localhost>" CACHE STRING
    "Maintainer field of the .deb")

set(CPACK_VERBATIM_VARIABLES ON)
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME sluice)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "${SLUICE_PACKAGE_MAINTAINER}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "rate-limited queuing HTTP reverse proxy")
set(CPACK_SET_DESTDIR ON)
set(CPACK_INSTALL_PREFIX /usr)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)

set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${SLUICE_PACKAGE_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# The summary above is the Description's first line; this is the rest.
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION
"sluice sits in front of a third-party API that enforces a strict rate
limit, parks bursts of client requests in a FIFO and releases them to the
API no faster than the limit allows, so that the API never answers 429 and
no request is dropped. It runs as a hardened systemd service.")
# Library dependencies come from dpkg-shlibdeps; the maintainer scripts
# need deb-systemd-helper and deb-systemd-invoke.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# libcurl is loaded at run time (src/curlclient.c), so shlibdeps cannot see it.
set(CPACK_DEBIAN_PACKAGE_DEPENDS "init-system-helpers, libcurl4 (>= 7.88)")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${CMAKE_SOURCE_DIR}/cmake/debian/conffiles
    ${CMAKE_SOURCE_DIR}/cmake/debian/postinst
    ${CMAKE_SOURCE_DIR}/cmake/debian/prerm
    ${CMAKE_SOURCE_DIR}/cmake/debian/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

set(CPACK_SOURCE_GENERATOR TGZ)
set(CPACK_SOURCE_IGNORE_FILES "/\\.git/" "/build[^/]*/" "/__pycache__/")

include(CPack)
