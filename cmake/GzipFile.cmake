# GzipFile.cmake - build-time helper: compress SRC into DST as Debian wants man
# pages (gzip -9n: best compression, no name or time stamp, so the package
# is reproducible).
# Usage: cmake -DGZIP=/bin/gzip -DSRC=file -DDST=file.gz -P GzipFile.cmake
foreach(var IN ITEMS GZIP SRC DST)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "GzipFile.cmake: ${var} is not set")
  endif()
endforeach()
get_filename_component(dir "${DST}" DIRECTORY)
file(MAKE_DIRECTORY "${dir}")
execute_process(COMMAND "${GZIP}" -9 -n -c "${SRC}"
                OUTPUT_FILE "${DST}.tmp"
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  file(REMOVE "${DST}.tmp")
  message(FATAL_ERROR "gzip ${SRC} failed: ${rc}")
endif()
file(RENAME "${DST}.tmp" "${DST}")
